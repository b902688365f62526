"""Extensions, created unbound and attached in the application factory."""

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from core.config import Settings
from core.models import Base

# The models live in core (plain SQLAlchemy, shared with the listener and the scheduler);
# Flask-SQLAlchemy provides the request-scoped session over the same metadata.
db = SQLAlchemy(metadata=Base.metadata)
login_manager = LoginManager()
csrf = CSRFProtect()
# In-memory counts are per gunicorn worker: the effective limit is multiplied by the number of
# workers unless RATELIMIT_STORAGE_URI points at a shared store (e.g. redis://).
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
openapi = Api()  # flask-smorest: request validation and /api/openapi.json


def current_settings() -> Settings:
    """The settings the application factory was given."""
    return current_app.config["INFOSCREEN_SETTINGS"]

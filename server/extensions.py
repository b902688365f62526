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
from server import ratelimit_storage  # noqa: F401  (registers database://)
from server.schemas import ErrorSchema

# The models live in core (plain SQLAlchemy, shared with the listener and the scheduler);
# Flask-SQLAlchemy provides the request-scoped session over the same metadata.
db = SQLAlchemy(metadata=Base.metadata)
login_manager = LoginManager()
csrf = CSRFProtect()
# The store is RATELIMIT_STORAGE_URI: by default database:// (server.ratelimit_storage), one
# count for every gunicorn worker. Every attempt counts against every limit of a route, even
# past the first one breached (see server.sign_in_limits).
limiter = Limiter(key_func=get_remote_address, fail_on_first_breach=False)
class _Api(Api):
    # The document describes the error body every route answers (server/app.py).
    ERROR_SCHEMA = ErrorSchema


openapi = _Api()  # flask-smorest: request validation and /api/openapi.json


def current_settings() -> Settings:
    """The settings the application factory was given."""
    return current_app.config["INFOSCREEN_SETTINGS"]

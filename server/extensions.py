"""Extensions, created unbound and attached in the application factory."""

from flask_sqlalchemy import SQLAlchemy

from core.models import Base

# The models live in core (plain SQLAlchemy, shared with the listener and the scheduler);
# Flask-SQLAlchemy provides the request-scoped session over the same metadata.
db = SQLAlchemy(metadata=Base.metadata)

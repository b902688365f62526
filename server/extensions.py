"""Extensions, created unbound and attached in the application factory."""

from flask_sqlalchemy import SQLAlchemy

from core.models import Base

db = SQLAlchemy(model_class=Base)

"""Application factory."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify
from sqlalchemy import event
from werkzeug.exceptions import HTTPException

from core.config import Settings, load_settings
from core.db import normalise_url, sqlite_pragmas
from server.extensions import db

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(
        __name__,
        template_folder=str(FRONTEND / "templates"),
        static_folder=str(FRONTEND / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=normalise_url(settings.database_url),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        INFOSCREEN_SETTINGS=settings,
    )
    db.init_app(app)
    if settings.database_url.startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", sqlite_pragmas)

    from server import health

    app.register_blueprint(health.bp)

    @app.errorhandler(HTTPException)
    def json_error(exc: HTTPException):
        # One JSON error shape for every route.
        return jsonify(error=exc.name, message=exc.description), exc.code

    return app

"""Application factory."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from flask import Flask, jsonify
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

import frontend
from core.config import Settings, load_settings
from core.db import normalise_url, sqlite_pragmas
from server import security_headers, sign_in_limits
from server.auth import protect_from_csrf
from server.extensions import csrf, db, limiter, login_manager, openapi

log = logging.getLogger(__name__)
FRONTEND = Path(frontend.__file__).resolve().parent  # in a checkout and in an installed wheel


def _throwaway_secret_key() -> str:
    log.warning("SECRET_KEY is not set: sessions end when this process does and do not work "
                "across several workers; set SECRET_KEY (production refuses to start without)")
    return secrets.token_urlsafe(32)


def trust_proxies(app: Flask, hops: int) -> None:
    """Behind `hops` reverse proxies the client's address and scheme come from their
    X-Forwarded-For/-Proto; without proxies those headers are anyone's to forge."""
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(
        __name__,
        template_folder=str(FRONTEND / "templates"),
        static_folder=str(FRONTEND / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key or _throwaway_secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        # CSRF is checked in a before_request hook: only for cookie-carrying requests.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_uri,
        # Retry-After on a refused sign-in is set with the message that states it, from the
        # same clock (server.sign_in_limits); no X-RateLimit-* headers to tune guessing by.
        RATELIMIT_HEADERS_ENABLED=False,
        API_TITLE="Infoscreen fleet API",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        SQLALCHEMY_DATABASE_URI=normalise_url(settings.database_url),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        INFOSCREEN_SETTINGS=settings,
    )
    trust_proxies(app, settings.trusted_proxies)
    db.init_app(app)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    sign_in_limits.init_app(app)
    security_headers.init_app(app)
    app.before_request(protect_from_csrf)
    if settings.database_url.startswith("sqlite"):
        with app.app_context():
            event.listen(db.engine, "connect", sqlite_pragmas)

    from server import (
        api,
        audit,
        auth,
        commands,
        groups,
        health,
        metrics,
        notifications,
        screenshots,
        web,
    )

    for blueprint in (health.bp, auth.bp, web.bp, audit.bp, screenshots.compat,
                      notifications.panel, metrics.bp):
        app.register_blueprint(blueprint)
    metrics.init_app(app)
    openapi.init_app(app)
    openapi.register_blueprint(api.bp)
    openapi.register_blueprint(commands.bp)
    openapi.register_blueprint(groups.bp)
    openapi.register_blueprint(screenshots.bp)
    openapi.register_blueprint(notifications.bp)
    # The API's description is for signed-in staff and scripts too.
    spec_endpoint = "api-docs.openapi_json"
    app.view_functions[spec_endpoint] = auth.require_role("viewer")(
        app.view_functions[spec_endpoint])

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError):
        return jsonify(error="Forbidden", message=f"CSRF check failed: {exc.description}"), 403

    @app.errorhandler(HTTPException)
    def json_error(exc: HTTPException):
        # One JSON error shape for every route (registered after flask-smorest's own).
        body = {"error": exc.name, "message": exc.description}
        data = getattr(exc, "data", None) or {}
        if data.get("message"):
            body["message"] = data["message"]
        if data.get("messages"):  # request validation: which field, and why
            body["errors"] = data["messages"]
        return jsonify(body), exc.code

    return app

"""The Flask application: REST API and staff panels. gunicorn runs `server:create_app()`."""

from server.app import create_app

__all__ = ["create_app"]

"""`/healthz`: the one route without authentication, for load balancers and compose."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.extensions import db

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("health check: database unreachable: %s", str(exc).splitlines()[0][:200])
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok")

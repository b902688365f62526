"""`/healthz` (the process answers and reaches its database) and `/readyz` (the whole system
works: database, broker, and a scheduler that finished a good cycle lately). Both without
authentication, for load balancers, compose and monitoring; they say nothing secret."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from core.clock import utc_now
from core.fleet import iso
from core.scheduler_state import last_good_cycle
from server.dispatch import command_dispatcher
from server.extensions import current_settings, db

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


def _database() -> dict[str, Any]:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        first = (str(exc).splitlines() or ["?"])[0][:200]
        log.warning("health check: database unreachable: %s", first)
        db.session.rollback()
        return {"ok": False, "detail": "unreachable"}
    return {"ok": True}


@bp.get("/healthz")
def healthz():
    if not _database()["ok"]:
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok")


def _broker() -> dict[str, Any]:
    settings = current_settings()
    connected = command_dispatcher().publisher.connected
    where = f"{settings.mqtt_host}:{settings.mqtt_port}"
    return {"ok": True, "at": where} if connected else {
        "ok": False, "at": where, "detail": "not connected (unreachable, or the login refused)"}


def _scheduler() -> dict[str, Any]:
    limit = current_settings().readyz_scheduler_max_age_seconds
    try:
        at = last_good_cycle(db.session)
    except SQLAlchemyError:
        db.session.rollback()
        return {"ok": False, "detail": "unknown: the database is unreachable"}
    if at is None:
        return {"ok": False, "detail": "no good cycle recorded yet", "maxAgeSeconds": limit}
    age = (utc_now() - at).total_seconds()
    return {"ok": age <= limit, "lastGoodCycleAt": iso(at), "ageSeconds": round(age, 1),
            "maxAgeSeconds": limit}


@bp.get("/readyz")
def readyz():
    checks = {"database": _database(), "broker": _broker(), "scheduler": _scheduler()}
    ready = all(check["ok"] for check in checks.values())
    return jsonify(status="ok" if ready else "error", checks=checks), 200 if ready else 503

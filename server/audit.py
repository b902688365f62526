"""`GET /api/audit`: who did what, for admins."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask_smorest import abort
from marshmallow import EXCLUDE, Schema, ValidationError
from sqlalchemy import func, select

from core.models import AuditEntry
from server import schemas
from server.auth import require_role
from server.extensions import db

bp = Blueprint("audit", __name__)


def query_args(schema: Schema) -> dict:
    """The query checked by `schema`; a bad argument is a 422 in the API's error shape, as
    flask-smorest answers for the routes it validates."""
    try:
        return schema.load(request.args, unknown=EXCLUDE)
    except ValidationError as exc:
        abort(422, messages={"query": exc.messages})


@bp.get("/api/audit")
@require_role("admin")
def audit_log():
    args = query_args(schemas.AuditListArgs())
    page, per_page = args["page"], args["perPage"]
    total = db.session.scalar(select(func.count()).select_from(AuditEntry))
    entries = db.session.scalars(
        select(AuditEntry).order_by(AuditEntry.id.desc())
        .offset((page - 1) * per_page).limit(per_page)
    )
    return jsonify(
        page=page, perPage=per_page, total=total,
        items=[
            {"id": e.id, "occurredAt": e.occurred_at.isoformat(), "actor": e.actor,
             "action": e.action, "target": e.target, "details": e.details}
            for e in entries
        ],
    )

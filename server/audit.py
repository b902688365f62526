"""`GET /api/audit`: who did what, for admins."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import func, select

from core.models import AuditEntry
from server.auth import require_role
from server.extensions import db

bp = Blueprint("audit", __name__)


@bp.get("/api/audit")
@require_role("admin")
def audit_log():
    page = max(1, request.args.get("page", 1, type=int))
    per_page = min(200, max(1, request.args.get("perPage", 50, type=int)))
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

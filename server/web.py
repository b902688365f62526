"""The staff panels: fleet overview with the alert and crash panels, client detail, events.

Pages are rendered on the server; the service-failed panel refreshes itself from the API
(frontend/static/panels.js). Device-supplied text is only ever inserted as text: Jinja
escapes it in templates, and the script uses textContent.
"""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from sqlalchemy import select

from core.activity import activity_timeline
from core.clock import utc_now
from core.commands import client_commands
from core.contract import CLIENT_ID_RE
from core.fleet import age_text, client_page, crashed_clients, event_page, fleet_overview
from core.liveness import liveness
from core.models import Client, ClientLog
from core.staff import role_at_least
from server import schemas
from server.auth import current_principal, require_role
from server.charts import activity_chart
from server.extensions import current_settings, db

bp = Blueprint("web", __name__)
PER_PAGE = 50


def _page_context(**extra):
    principal = current_principal()
    return {"principal": principal, "can_ack": role_at_least(principal.role, "operator"),
            "refresh_ms": int(current_settings().panel_refresh_seconds * 1000), **extra}


def _query_args(schema) -> dict:
    """The query checked by the API's schema. A page ignores an invalid argument (a page
    number out of range too) and shows what it would without it, rather than an error."""
    given = {k: v for k, v in request.args.items() if k in schema.fields and v}
    errors = schema.validate(given)
    return schema.load({k: v for k, v in given.items() if k not in errors})


def _fleet_filters() -> dict:
    return _query_args(schemas.ClientListArgs(only=("status", "search", "sort", "page")))


@bp.get("/")
@require_role("viewer", page=True)
def home():
    s = current_settings()
    now = utc_now()
    args = _fleet_filters()
    status, search, sort, page = args.get("status"), args.get("search"), args["sort"], args["page"]
    total, clients = client_page(db.session, now, s.heartbeat_stale_seconds,
                                 s.heartbeat_down_seconds, status=status, search=search,
                                 sort=sort, page=page, per_page=PER_PAGE)
    rows = [
        {"client": c, "status": liveness(c.last_seen_at, now, s.heartbeat_stale_seconds,
                                         s.heartbeat_down_seconds),
         "seen": age_text((now - c.last_seen_at).total_seconds())}
        for c in clients
    ]
    return render_template(
        "home.html",
        **_page_context(
            counts=fleet_overview(db.session, now, s.heartbeat_stale_seconds,
                                  s.heartbeat_down_seconds),
            crashed=crashed_clients(db.session, now, s.heartbeat_stale_seconds),
            rows=rows, total=total, page=page, pages=max(1, -(-total // PER_PAGE)),
            filters={"status": status or "", "search": search or "", "sort": sort},
        ),
    )


@bp.get("/clients/<string:client_uuid>")
@require_role("viewer", page=True)
def client_detail(client_uuid: str):
    client = db.session.get(Client, client_uuid) if CLIENT_ID_RE.match(client_uuid) else None
    if client is None:
        abort(404)
    s = current_settings()
    now = utc_now()
    logs = db.session.scalars(select(ClientLog).where(ClientLog.client_uuid == client_uuid)
                              .order_by(ClientLog.id.desc()).limit(50)).all()
    _, events = event_page(db.session, client_uuid=client_uuid, per_page=50)
    timeline = activity_timeline(db.session, client_uuid, now)
    commands, _ = client_commands(db.session, client_uuid, limit=20)
    return render_template(
        "client.html",
        **_page_context(
            client=client, logs=logs, events=events, chart=activity_chart(timeline),
            commands=commands, is_admin=role_at_least(current_principal().role, "admin"),
            status=liveness(client.last_seen_at, now, s.heartbeat_stale_seconds,
                            s.heartbeat_down_seconds),
            seen=age_text((now - client.last_seen_at).total_seconds()),
        ),
    )


@bp.get("/events")
@require_role("viewer", page=True)
def events():
    page = _query_args(schemas.PageArgs(only=("page",)))["page"]
    total, rows = event_page(db.session, page=page, per_page=PER_PAGE)
    return render_template("events.html", **_page_context(
        events=rows, page=page, pages=max(1, -(-total // PER_PAGE))))

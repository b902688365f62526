"""The fleet API: clients, alerts, overview, events. Documented at /api/openapi.json."""

from __future__ import annotations

from flask_smorest import Blueprint, abort
from sqlalchemy import select

from core.activity import activity_timeline, timeline_document
from core.clock import utc_now
from core.contract import CLIENT_ID_RE
from core.fleet import (
    FleetError,
    UnknownClient,
    acknowledge_service_failed,
    client_page,
    client_summary,
    crashed_clients,
    event_page,
    fleet_overview,
    iso,
    open_service_failed,
)
from core.models import Client
from core.screenshot_store import screenshot_overview
from server import schemas
from server.auth import current_principal, require_role
from server.extensions import current_settings, db
from server.retained import clear_retained_service_failed

bp = Blueprint("api", __name__, url_prefix="/api", description="Fleet state and alerts")


def known_client_id(client_uuid: str) -> str:
    if not CLIENT_ID_RE.match(client_uuid):
        abort(404, message=f"no client {client_uuid[:40]!r}: not a client uuid")
    return client_uuid


def client_json(client: Client) -> dict:
    s = current_settings()
    return client_summary(client, utc_now(), s.heartbeat_stale_seconds, s.heartbeat_down_seconds,
                          s.default_supported_actions)


@bp.route("/clients")
@require_role("viewer")
@bp.arguments(schemas.ClientListArgs, location="query")
@bp.response(200, schemas.ClientPageSchema)
def clients(args):
    """Clients, filtered by status, group or a search on hostname, uuid and ip, one page."""
    s = current_settings()
    total, rows = client_page(
        db.session, utc_now(), s.heartbeat_stale_seconds, s.heartbeat_down_seconds,
        status=args.get("status"), search=args.get("search"), group_id=args.get("groupId"),
        sort=args["sort"],
        page=args["page"], per_page=args["perPage"],
    )
    return {"total": total, "page": args["page"], "perPage": args["perPage"],
            "items": [client_json(c) for c in rows]}


@bp.route("/clients/crashed")
@require_role("viewer")
@bp.response(200, schemas.CrashedListSchema)
def crashed():
    """Clients whose player crashed (`process_crashed`) or whose heartbeat is stale."""
    rows = crashed_clients(db.session, utc_now(), current_settings().heartbeat_stale_seconds)
    return {"items": [{**client_json(c), "reason": reason} for c, reason in rows]}


@bp.route("/clients/service_failed")
@require_role("viewer")
@bp.response(200, schemas.ClientListSchema)
def service_failed():
    """Clients with an open service-failed alert, newest first."""
    return {"items": [client_json(c) for c in open_service_failed(db.session)]}


@bp.route("/clients/<string:client_uuid>")
@require_role("viewer")
@bp.response(200, schemas.ClientDetailSchema)
def client_detail(client_uuid: str):
    """One client, with its last health report."""
    client = db.session.get(Client, known_client_id(client_uuid))
    if client is None:
        abort(404, message=f"no client {client_uuid}")
    return {**client_json(client), "health": client.health,
            "firstSeenAt": client.first_seen_at.isoformat()}


@bp.route("/clients/<string:client_uuid>/activity")
@require_role("viewer")
@bp.response(200, schemas.ActivitySchema)
def client_activity(client_uuid: str):
    """The client's messages and heartbeats per 5 minutes over the last 24 h, zero-filled."""
    timeline = activity_timeline(db.session, known_client_id(client_uuid), utc_now())
    if timeline is None:
        abort(404, message=f"no client {client_uuid}")
    return timeline_document(timeline)


@bp.route("/clients/<string:client_uuid>/clear_service_failed", methods=["POST"])
@require_role("operator")
@bp.response(200, schemas.AcknowledgedSchema)
def clear_service_failed(client_uuid: str):
    """Acknowledge ("quittieren") the client's alert and clear the retained report."""
    try:
        client = acknowledge_service_failed(db.session, known_client_id(client_uuid),
                                            actor=current_principal().name, now=utc_now())
    except FleetError as exc:
        db.session.rollback()
        abort(404 if isinstance(exc, UnknownClient) else 409, message=str(exc))
    db.session.commit()
    cleared = clear_retained_service_failed(current_settings(), client_uuid)
    return {"client": client_json(client), "retainedCleared": cleared}


@bp.route("/monitoring/overview")
@require_role("viewer")
@bp.arguments(schemas.OverviewArgs, location="query")
@bp.response(200, schemas.OverviewSchema)
def overview(args):
    """Fleet counts by status, and a page of each client's reconnect figures."""
    s = current_settings()
    counts = fleet_overview(db.session, utc_now(), s.heartbeat_stale_seconds,
                            s.heartbeat_down_seconds)
    rows = db.session.execute(
        select(Client.uuid, Client.hostname, Client.mqtt_reconnect_count,
               Client.mqtt_last_disconnect_at)
        .order_by(Client.mqtt_reconnect_count.desc().nulls_last(), Client.uuid)
        .offset((args["page"] - 1) * args["perPage"]).limit(args["perPage"])
    )
    rows = list(rows)
    shots = screenshot_overview(db.session, [r.uuid for r in rows], utc_now(),
                                s.priority_screenshot_ttl_seconds)
    figures = [
        {"uuid": r.uuid, "hostname": r.hostname, "mqttReconnectCount": r.mqtt_reconnect_count,
         "mqttLastDisconnectAt": iso(r.mqtt_last_disconnect_at), **shots.clients[r.uuid]}
        for r in rows
    ]
    return {"counts": counts, "total": counts["total"], "page": args["page"],
            "perPage": args["perPage"], "clients": figures,
            "summary": {"activePriorityScreenshots": shots.active_priority}}


@bp.route("/events")
@require_role("viewer")
@bp.arguments(schemas.EventListArgs, location="query")
@bp.response(200, schemas.EventPageSchema)
def events(args):
    """Fleet events, newest first."""
    total, rows = event_page(db.session, page=args["page"], per_page=args["perPage"],
                             client_uuid=args.get("clientUuid"))
    return {"total": total, "page": args["page"], "perPage": args["perPage"],
            "items": [{"id": e.id, "type": e.type, "severity": e.severity,
                       "clientUuid": e.client_uuid, "occurredAt": e.occurred_at.isoformat(),
                       "details": e.details} for e in rows]}

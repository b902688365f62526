"""Read-side views of the fleet, shared by the CLI and the API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from core.capabilities import supported_actions
from core.events import new_event
from core.liveness import ALIVE, DOWN, STALE, liveness
from core.models import Client, Event, IngestRejection
from core.staff import audit


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def duration_text(seconds: float) -> str:
    """'12 s', '5 min', '2.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def age_text(seconds: float) -> str:
    """'12 s ago', '5 min ago', '2.5 h ago': how long since a client was last seen."""
    return f"{duration_text(seconds)} ago"


def client_summary(client: Client, now: datetime, stale_seconds: int, down_seconds: int,
                   default_actions: Sequence[str]) -> dict[str, Any]:
    """One client's state in the API's camelCase shape."""
    actions, actions_source = supported_actions(client, default_actions)
    return {
        "uuid": client.uuid,
        "hostname": client.hostname,
        "ip": client.ip,
        "softwareVersion": client.software_version,
        "groupId": client.group_id,
        "groupName": client.group.name if client.group else None,
        "reportedGroupId": client.reported_group_id,
        "supportedActions": actions,
        "supportedActionsSource": actions_source,
        "powerState": client.power_state and {
            k: client.power_state.get(k)
            for k in ("appliedState", "source", "result", "detail", "reportedAt")},
        "status": liveness(client.last_seen_at, now, stale_seconds, down_seconds),
        "lastSeenAt": iso(client.last_seen_at),
        "lastSeenSecondsAgo": round((now - client.last_seen_at).total_seconds(), 1),
        "lastHeartbeatAt": iso(client.last_heartbeat_at),
        "processStatus": client.process_status,
        "presence": client.presence,
        "mqttReconnectCount": client.mqtt_reconnect_count,
        "mqttLastDisconnectAt": iso(client.mqtt_last_disconnect_at),
        "serviceFailed": {
            "unit": client.service_failed_unit,
            "failedAt": iso(client.service_failed_at),
            "acknowledgedAt": iso(client.service_failed_acknowledged_at),
            "acknowledgedBy": client.service_failed_acknowledged_by,
        }
        if client.service_failed_at
        else None,
        "serviceFailedOpen": client.service_failed_open,
    }


def list_clients(session: Session) -> list[Client]:
    return list(session.scalars(select(Client).order_by(Client.hostname, Client.uuid)))


def rejection_counts(session: Session) -> list[IngestRejection]:
    return list(session.scalars(select(IngestRejection).order_by(IngestRejection.reason)))


# Queries behind the staff API and panels. Status is computed in SQL from last_seen_at, so
# filtering and counting stay set-based at 10,000 clients.


class FleetError(LookupError):
    """The request names something that is not there; the message says what."""


class UnknownClient(FleetError):
    pass


class NoOpenAlert(FleetError):
    pass


def _status_clause(status: str, now: datetime, stale_seconds: int, down_seconds: int) -> Any:
    stale_before = now - timedelta(seconds=stale_seconds)
    down_before = now - timedelta(seconds=down_seconds)
    seen = Client.last_seen_at
    return {
        ALIVE: seen > stale_before,
        STALE: and_(seen <= stale_before, seen > down_before),
        DOWN: seen <= down_before,
    }[status]


SORTS = {
    "hostname": (Client.hostname, Client.uuid),
    "lastSeen": (Client.last_seen_at.desc(), Client.uuid),
    "reconnects": (Client.mqtt_reconnect_count.desc(), Client.uuid),
    "uuid": (Client.uuid,),
}


def client_page(
    session: Session,
    now: datetime,
    stale_seconds: int,
    down_seconds: int,
    *,
    status: str | None = None,
    search: str | None = None,
    group_id: int | None = None,
    sort: str = "hostname",
    page: int = 1,
    per_page: int = 50,
) -> tuple[int, list[Client]]:
    """One page of clients and the total that match the filters."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    query = select(Client)
    if status is not None:
        query = query.where(_status_clause(status, now, stale_seconds, down_seconds))
    if group_id is not None:
        query = query.where(Client.group_id == group_id)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(Client.hostname.ilike(pattern, escape="\\"),
                                Client.uuid.ilike(pattern, escape="\\"),
                                Client.ip.ilike(pattern, escape="\\")))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(
        query.order_by(*SORTS[sort]).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return total, list(rows)


PROCESS_CRASHED, HEARTBEAT_STALE = "process_crashed", "heartbeat_stale"


def crashed_clients(session: Session, now: datetime, stale_seconds: int
                    ) -> list[tuple[Client, str]]:
    """Clients whose player crashed, or whose heartbeats stopped, with the reason."""
    stale_before = now - timedelta(seconds=stale_seconds)
    heartbeat_stale = or_(Client.last_heartbeat_at.is_(None),
                          Client.last_heartbeat_at <= stale_before)
    rows = session.scalars(
        select(Client)
        .where(or_(Client.process_status == "crashed", heartbeat_stale))
        .order_by(Client.hostname, Client.uuid)
    )
    return [
        (c, PROCESS_CRASHED if c.process_status == "crashed" else HEARTBEAT_STALE) for c in rows
    ]


def open_service_failed(session: Session) -> list[Client]:
    """Clients with an alert nobody acknowledged yet, newest first."""
    return list(session.scalars(
        select(Client)
        .where(Client.service_failed_at.is_not(None),
               Client.service_failed_acknowledged_at.is_(None))
        .order_by(Client.service_failed_received_at.desc(), Client.uuid)
    ))


def fleet_overview(session: Session, now: datetime, stale_seconds: int, down_seconds: int
                   ) -> dict[str, int]:
    """Counts by status, crashed processes and open alerts, in one query."""

    def count_where(clause: Any) -> Any:
        return func.coalesce(func.sum(case((clause, 1), else_=0)), 0)

    row = session.execute(select(
        func.count(),
        *(count_where(_status_clause(s, now, stale_seconds, down_seconds))
          for s in (ALIVE, STALE, DOWN)),
        count_where(Client.process_status == "crashed"),
        count_where(and_(Client.service_failed_at.is_not(None),
                         Client.service_failed_acknowledged_at.is_(None))),
    ).select_from(Client)).one()
    total, alive, stale, down, crashed, alerts = (int(v) for v in row)
    return {"total": total, "alive": alive, "stale": stale, "down": down,
            "processCrashed": crashed, "serviceFailedOpen": alerts}


def event_page(session: Session, *, page: int = 1, per_page: int = 50,
               client_uuid: str | None = None) -> tuple[int, list[Event]]:
    query = select(Event)
    if client_uuid is not None:
        query = query.where(Event.client_uuid == client_uuid)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(
        query.order_by(Event.occurred_at.desc(), Event.id.desc())
        .offset((page - 1) * per_page).limit(per_page)
    ).all()
    return total, list(rows)


def acknowledge_service_failed(session: Session, client_uuid: str, *, actor: str,
                               now: datetime) -> Client:
    """Staff acknowledge ("quittieren") an open alert: recorded, audited, an event raised.

    Clearing the retained message at the broker is the caller's part (it owns the MQTT
    client); the listener keeps the alert acknowledged if the same report is replayed.
    """
    client = session.get(Client, client_uuid, with_for_update=True)
    if client is None:
        raise UnknownClient(f"no client {client_uuid}")
    if not client.service_failed_open:
        raise NoOpenAlert(f"client {client_uuid} has no open service-failed alert")
    client.service_failed_acknowledged_at = now
    client.service_failed_acknowledged_by = actor
    unit = client.service_failed_unit
    audit(session, now, actor, "service_failed.acknowledge", client_uuid, unit=unit)
    session.add(new_event("service_failed_acknowledged", "info", now, client_uuid, unit=unit,
                          by=actor))
    return client

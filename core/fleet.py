"""Read-side views of the fleet, shared by the CLI and the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.liveness import liveness
from core.models import Client, IngestRejection


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def client_summary(client: Client, now: datetime, stale_seconds: int, down_seconds: int
                   ) -> dict[str, Any]:
    """One client's state in the API's camelCase shape."""
    return {
        "uuid": client.uuid,
        "hostname": client.hostname,
        "ip": client.ip,
        "softwareVersion": client.software_version,
        "groupId": client.group_id,
        "status": liveness(client.last_seen_at, now, stale_seconds, down_seconds),
        "lastSeenAt": _iso(client.last_seen_at),
        "lastSeenSecondsAgo": round((now - client.last_seen_at).total_seconds(), 1),
        "lastHeartbeatAt": _iso(client.last_heartbeat_at),
        "processStatus": client.process_status,
        "presence": client.presence,
        "mqttReconnectCount": client.mqtt_reconnect_count,
        "mqttLastDisconnectAt": _iso(client.mqtt_last_disconnect_at),
        "serviceFailed": {
            "unit": client.service_failed_unit,
            "failedAt": _iso(client.service_failed_at),
            "acknowledgedAt": _iso(client.service_failed_acknowledged_at),
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

"""Monitor topics (DESIGN.md §4), delivered from the database, so nothing is lost while the
broker is away.

- `infoscreen/monitoring/events`: one message per fleet event, from the `events` outbox;
  an event counts as delivered once the broker acknowledged it (PUBACK).
- `infoscreen/monitoring/clients/{uuid}` (retained): a client's derived state, whenever it
  changed. What was last acknowledged is kept as `clients.monitor_signature`; a client whose
  current signature differs is published again.

Both steps publish without waiting; PUBACKs are collected by callbacks and written by the
next step, so no transaction waits on the network.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, case, cast, func, select, update
from sqlalchemy.orm import Session

from core.fleet import iso
from core.models import Client, Event
from mqtt_client.publisher import Publisher

log = logging.getLogger(__name__)

BATCH = 500
RETRY_SECONDS = 30.0  # an unacknowledged message is published again after this


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class _InFlight:
    """What was published and not yet acknowledged, and what the broker acknowledged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[Any, float] = {}
        self._acked: dict[Any, Any] = {}

    def busy(self) -> set[Any]:
        horizon = time.monotonic() - RETRY_SECONDS
        with self._lock:
            self._sent = {k: t for k, t in self._sent.items() if t > horizon}
            # Acknowledged but not yet written down (the PUBACK came after this step took
            # the acknowledged ones): publishing it again would send it twice.
            return set(self._sent) | set(self._acked)

    def sent(self, key: Any) -> None:
        with self._lock:
            self._sent[key] = time.monotonic()

    def not_sent(self, key: Any) -> None:
        """The publisher did not take it after all: the next step may try again at once."""
        with self._lock:
            self._sent.pop(key, None)

    def callback(self, key: Any, value: Any = None):
        def on_puback(ok: bool, at: datetime | None = None) -> None:
            with self._lock:
                self._sent.pop(key, None)
                if ok:
                    self._acked[key] = value

        return on_puback

    def take_acked(self) -> dict[Any, Any]:
        with self._lock:
            acked, self._acked = self._acked, {}
            return acked


class DeliverEvents:
    def __init__(self, publisher: Publisher, prefix: str):
        self.publisher = publisher
        self.topic = f"{prefix}/monitoring/events"
        self.flight = _InFlight()

    def __call__(self, session: Session, now: datetime) -> bool:
        acked = self.flight.take_acked()
        if acked:
            session.execute(update(Event).where(Event.id.in_(list(acked)))
                            .values(delivered_at=now))
        if not self.publisher.connected:
            return False
        busy = self.flight.busy()
        rows = session.scalars(
            select(Event).where(Event.delivered_at.is_(None)).order_by(Event.id)
            .limit(BATCH + len(busy))
        ).all()
        fresh = [e for e in rows if e.id not in busy][:BATCH]
        for event in fresh:
            payload = {
                "id": event.id, "type": event.type, "severity": event.severity,
                "clientUuid": event.client_uuid, "occurredAt": iso(event.occurred_at),
                "details": event.details or {},
            }
            self.flight.sent(event.id)
            if not self.publisher.publish(self.topic, _encode(payload),
                                          on_puback=self.flight.callback(event.id)):
                self.flight.not_sent(event.id)
                break
        return len(fresh) == BATCH


def monitor_status(liveness: str | None, process_status: str | None, alert_open: bool) -> str:
    """ok, warn or down, as monitors see a client."""
    if liveness == "down":
        return "down"
    if liveness == "stale" or process_status == "crashed" or alert_open:
        return "warn"
    return "ok"


_ALERT_OPEN = Client.service_failed_at.is_not(None) & Client.service_failed_acknowledged_at.is_(
    None)


def _text(column: Any) -> Any:
    return func.coalesce(cast(column, String), "")


# Everything the retained state shows except the heartbeat time, which changes all the time.
SIGNATURE = (
    _text(Client.liveness) + "|" + _text(Client.process_status) + "|"
    + case((_ALERT_OPEN, "1"), else_="0") + "|" + _text(Client.service_failed_at) + "|"
    + _text(Client.mqtt_reconnect_count) + "|" + _text(Client.mqtt_last_disconnect_at) + "|"
    + _text(Client.hostname)
)


class PublishClientStates:
    def __init__(self, publisher: Publisher, prefix: str):
        self.publisher = publisher
        self.prefix = prefix
        self.flight = _InFlight()

    def __call__(self, session: Session, now: datetime) -> bool:
        acked = self.flight.take_acked()
        if acked:
            session.connection().execute(
                update(Client.__table__)
                .where(Client.__table__.c.uuid == bindparam("u"))
                .values(monitor_signature=bindparam("s")),
                [{"u": uuid, "s": signature} for uuid, signature in acked.items()],
            )
        if not self.publisher.connected:
            return False
        busy = self.flight.busy()
        rows = session.execute(
            select(Client, SIGNATURE.label("signature"))
            .where(Client.liveness.is_not(None),
                   SIGNATURE.is_distinct_from(Client.monitor_signature))
            .limit(BATCH + len(busy))
        ).all()
        fresh = [(c, s) for c, s in rows if c.uuid not in busy][:BATCH]
        for client, signature in fresh:
            self.flight.sent(client.uuid)
            topic = f"{self.prefix}/monitoring/clients/{client.uuid}"
            if not self.publisher.publish(topic, _encode(client_state(client, now)), retain=True,
                                          on_puback=self.flight.callback(client.uuid, signature)):
                self.flight.not_sent(client.uuid)
                break
        return len(fresh) == BATCH


def client_state(client: Client, now: datetime) -> dict[str, Any]:
    alert_open = client.service_failed_open
    return {
        "uuid": client.uuid,
        "hostname": client.hostname,
        "status": monitor_status(client.liveness, client.process_status, alert_open),
        "liveness": client.liveness,
        "processStatus": client.process_status,
        "serviceFailed": {
            "open": alert_open, "unit": client.service_failed_unit,
            "failedAt": iso(client.service_failed_at),
        },
        "lastHeartbeatAt": iso(client.last_heartbeat_at),
        "lastSeenAt": iso(client.last_seen_at),
        "mqttReconnectCount": client.mqtt_reconnect_count,
        "mqttLastDisconnectAt": iso(client.mqtt_last_disconnect_at),
        "publishedAt": iso(now),
    }

"""The scheduler's watch over the fleet: liveness transitions and crash detection.

Both are set-based UPDATE ... RETURNING statements over `clients`, so a cycle costs the same
few statements at 10 or 100,000 clients; the returned rows become fleet events in the same
transaction (the outbox delivers them to monitors).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from core.events import insert_events
from core.models import Client

log = logging.getLogger(__name__)

CHUNK = 5000  # clients changed per statement; a mass outage takes a few steps


def _events(session: Session, rows: list[Any], type_: str, severity: str, now: datetime,
            **details: Any) -> int:
    return insert_events(session, type_, severity, now, (
        (r.uuid, {**details, "lastSeenAt": r.last_seen_at.isoformat()}) for r in rows
    ))


def _move(session: Session, where: ColumnElement[bool], values: dict[str, Any]) -> list[Any]:
    # The chunk's rows are locked first, in uuid order: two schedulers acting at once (a
    # lost leader lock) then wait for each other instead of deadlocking on rows each
    # locked first. (SQLite has one writer at a time.)
    chunk: Any = select(Client.uuid).where(where).order_by(Client.uuid).limit(CHUNK)
    if session.get_bind().dialect.name == "postgresql":
        chunk = list(session.scalars(chunk.with_for_update()))
        if not chunk:
            return []
    else:
        chunk = chunk.scalar_subquery()
    # `where` again on the outer statement: a step that waited for another one's row locks
    # re-checks it against the rows as they are now, and leaves alone what already moved.
    return session.execute(
        update(Client).where(Client.uuid.in_(chunk), where).values(**values)
        .returning(Client.uuid, Client.last_seen_at)
        .execution_options(synchronize_session=False)
    ).all()


class FollowLiveness:
    """alive -> stale -> down -> recovered, from the age of each client's last message.

    A dead man's switch: a screen that falls silent raises `client_stale`, then
    `client_down`; its next message raises `client_recovered`. A client seen for the first
    time becomes alive without an event (the listener already raised `client_registered`).
    """

    def __init__(self, stale_seconds: int, down_seconds: int):
        self.stale = timedelta(seconds=stale_seconds)
        self.down = timedelta(seconds=down_seconds)

    def __call__(self, session: Session, now: datetime) -> bool:
        stale_at, down_at = now - self.stale, now - self.down
        seen = Client.last_seen_at
        state = Client.liveness
        changed = {"liveness_changed_at": now}
        moved = 0
        recovered = _move(session, (seen > stale_at) & state.in_(("stale", "down")),
                          {"liveness": "alive", **changed})
        moved += _events(session, recovered, "client_recovered", "info", now)
        new = _move(session, (seen > stale_at) & state.is_(None),
                    {"liveness": "alive", **changed})
        moved += len(new)
        stale = _move(session, (seen <= stale_at) & (seen > down_at)
                      & (state.is_(None) | (state == "alive")), {"liveness": "stale", **changed})
        moved += _events(session, stale, "client_stale", "warning", now)
        down = _move(session, (seen <= down_at) & (state.is_(None) | (state != "down")),
                     {"liveness": "down", **changed})
        moved += _events(session, down, "client_down", "error", now)
        if moved:
            log.info("liveness: %d recovered, %d new, %d stale, %d down",
                     len(recovered), len(new), len(stale), len(down))
        return any(len(rows) == CHUNK for rows in (recovered, new, stale, down))


def detect_crashes(session: Session, now: datetime) -> bool:
    """`crash_detected` when a client reports its player crashed, `crash_cleared` when it
    reports anything else again. The crash is reported once, however long it lasts."""
    crashed = Client.process_status == "crashed"
    reported = Client.crash_reported_at
    found = _move(session, crashed & reported.is_(None), {"crash_reported_at": now})
    _events(session, found, "crash_detected", "error", now, reason="process_crashed")
    running_again = Client.process_status.is_distinct_from("crashed")  # NULL counts too
    cleared = _move(session, running_again & reported.is_not(None), {"crash_reported_at": None})
    _events(session, cleared, "crash_cleared", "info", now)
    return len(found) == CHUNK or len(cleared) == CHUNK

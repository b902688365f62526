"""Client activity history: live messages and heartbeats per client and 5-minute bucket.

The listener adds each batch's counts with one upsert (`record_activity`); the client page
reads a zero-filled timeline of the last hours (`activity_timeline`); the scheduler deletes
old buckets in chunks (`prune_activity_before`). Retained copies that the broker replays on
(re)subscribe are not activity, and neither is a Last Will `offline`, which the broker sends
for a device that went silent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core import contract
from core.clock import as_utc
from core.contract import Message
from core.models import Client, ClientActivity

BUCKET_SECONDS = 300
BUCKET = timedelta(seconds=BUCKET_SECONDS)

ONLINE, OFFLINE, NO_DATA = "online", "offline", "no_data"
STATES = (ONLINE, OFFLINE, NO_DATA)


def bucket_start(at: datetime) -> datetime:
    """The start of the bucket that holds `at` (UTC)."""
    seconds = int(as_utc(at).timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    return datetime.fromtimestamp(seconds, UTC)


def fold_activity(messages: Iterable[Message]) -> list[tuple[str, datetime, int, int]]:
    """(client_uuid, bucket_start, heartbeats, messages) per client and bucket, sorted, so
    that concurrent listeners lock the rows in the same order."""
    counts: dict[tuple[str, int], list[int]] = {}
    for m in messages:
        if not m.is_sign_of_life:
            continue
        key = (m.client_uuid, int(m.received_at.timestamp()) // BUCKET_SECONDS)
        counted = counts.get(key)
        if counted is None:
            counted = counts[key] = [0, 0]
        counted[1] += 1
        if m.kind == contract.HEARTBEAT:
            counted[0] += 1
    return [
        (uuid, datetime.fromtimestamp(n * BUCKET_SECONDS, UTC), heartbeats, total)
        for (uuid, n), (heartbeats, total) in sorted(counts.items())
    ]


_COLUMNS = ("client_uuid", "bucket_start", "heartbeats", "messages")
_PG_TYPES = (postgresql.VARCHAR(36), postgresql.TIMESTAMP(timezone=True), postgresql.INTEGER(),
             postgresql.INTEGER())


def record_activity(session: Session, messages: Iterable[Message]) -> int:
    """Add the batch's counts to its buckets in one statement; the clients must exist.
    Returns how many buckets were written."""
    rows = fold_activity(messages)
    if not rows:
        return 0
    table = ClientActivity.__table__
    if session.get_bind().dialect.name == "postgresql":
        # One statement whatever the batch size: the rows travel as four array parameters.
        columns = zip(*rows, strict=True)
        source = select(func.unnest(*(
            bindparam(name, list(values), type_=postgresql.ARRAY(item_type))
            for name, values, item_type in zip(_COLUMNS, columns, _PG_TYPES, strict=True)
        )).table_valued(*_COLUMNS).render_derived(name="batch"))
        stmt = postgresql.insert(table).from_select(_COLUMNS, source)
        session.execute(_add_on_conflict(stmt))
    else:
        stmt = _add_on_conflict(sqlite.insert(table))
        session.execute(stmt, [dict(zip(_COLUMNS, row, strict=True)) for row in rows])
    return len(rows)


def _add_on_conflict(stmt: Any) -> Any:
    table = ClientActivity.__table__
    return stmt.on_conflict_do_update(
        index_elements=[table.c.client_uuid, table.c.bucket_start],
        set_={
            "heartbeats": table.c.heartbeats + stmt.excluded.heartbeats,
            "messages": table.c.messages + stmt.excluded.messages,
        },
    )


@dataclass(frozen=True, slots=True)
class ActivityBucket:
    start: datetime
    heartbeats: int
    messages: int
    # online: some message; offline: none, while the client was known; no_data: before the
    # client was first seen, or the current bucket while nothing has arrived in it yet.
    state: str


@dataclass(frozen=True, slots=True)
class Timeline:
    client_uuid: str
    start: datetime
    end: datetime  # exclusive: the end of the current bucket
    buckets: list[ActivityBucket]

    @property
    def online_seconds(self) -> int:
        return sum(BUCKET_SECONDS for b in self.buckets if b.state == ONLINE)

    @property
    def heartbeats(self) -> int:
        return sum(b.heartbeats for b in self.buckets)

    @property
    def messages(self) -> int:
        return sum(b.messages for b in self.buckets)


def activity_timeline(
    session: Session, client_uuid: str, now: datetime, hours: int = 24
) -> Timeline | None:
    """Every bucket of the last `hours` up to the current one, oldest first and zero-filled;
    None when there is no such client."""
    first_seen = session.scalar(select(Client.first_seen_at).where(Client.uuid == client_uuid))
    if first_seen is None:
        return None
    current = bucket_start(now)
    end = current + BUCKET
    start = end - timedelta(hours=hours)
    stored = {
        as_utc(row.bucket_start): (row.heartbeats, row.messages)
        for row in session.execute(
            select(ClientActivity.bucket_start, ClientActivity.heartbeats, ClientActivity.messages)
            .where(ClientActivity.client_uuid == client_uuid,
                   ClientActivity.bucket_start >= start, ClientActivity.bucket_start < end)
        )
    }
    known_from = bucket_start(first_seen)
    buckets = []
    for n in range(hours * 3600 // BUCKET_SECONDS):
        at = start + n * BUCKET
        heartbeats, messages = stored.get(at, (0, 0))
        if messages:
            state = ONLINE
        elif at < known_from or at == current:
            state = NO_DATA
        else:
            state = OFFLINE
        buckets.append(ActivityBucket(at, heartbeats, messages, state))
    return Timeline(client_uuid, start, end, buckets)


def timeline_document(timeline: Timeline) -> dict[str, Any]:
    """The timeline in the API's camelCase shape."""
    return {
        "clientUuid": timeline.client_uuid,
        "bucketSeconds": BUCKET_SECONDS,
        "start": timeline.start.isoformat(),
        "end": timeline.end.isoformat(),
        "onlineSeconds": timeline.online_seconds,
        "heartbeats": timeline.heartbeats,
        "messages": timeline.messages,
        "buckets": [
            {"start": b.start.isoformat(), "heartbeats": b.heartbeats, "messages": b.messages,
             "state": b.state}
            for b in timeline.buckets
        ],
    }


def prune_activity_before(session: Session, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` buckets that started before `cutoff`; returns how many."""
    oldest = (
        select(ClientActivity.client_uuid, ClientActivity.bucket_start)
        .where(ClientActivity.bucket_start < cutoff)
        .limit(limit)
    )
    result = session.execute(
        delete(ClientActivity)
        .where(tuple_(ClientActivity.client_uuid, ClientActivity.bucket_start).in_(oldest))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount

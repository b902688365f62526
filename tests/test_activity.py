"""Client activity history on both databases: what the listener counts per 5-minute bucket,
and the zero-filled timeline the client page shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import delete, select

from core.activity import NO_DATA, OFFLINE, ONLINE, activity_timeline, bucket_start
from core.contract import parse_message
from core.ingest import apply_batch
from core.models import Client, ClientActivity

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a bucket boundary
SCREEN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER = "9b2c1f3e-0d4a-4c5b-8e7f-1a2b3c4d5e6f"
FAILED = {"unit": "infoscreen-player.service", "failed_at": "2026-11-24T11:50:00Z"}
HEALTH = {"timestamp": "2026-11-24T12:00:00Z", "process_status": "running"}


def msg(suffix: str, payload, at: datetime = T0, uuid: str = SCREEN, retained: bool = False):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(f"infoscreen/{uuid}/{suffix}", raw, at, retained=retained)


def beat(at: datetime, uuid: str = SCREEN):
    return msg("heartbeat", {}, at, uuid)


def write(db, *items):
    with db.sessions() as session, session.begin():
        apply_batch(session, list(items), now=T0)


def buckets(db) -> dict[tuple[str, datetime], tuple[int, int]]:
    with db.sessions() as session:
        return {(r.client_uuid, r.bucket_start): (r.heartbeats, r.messages)
                for r in session.scalars(select(ClientActivity))}


def timeline(db, now: datetime, uuid: str = SCREEN, hours: int = 24):
    with db.sessions() as session:
        return activity_timeline(session, uuid, now, hours)


def test_buckets_start_every_five_minutes_in_utc():
    assert bucket_start(T0 + timedelta(minutes=4, seconds=59)) == T0
    assert bucket_start(T0 + timedelta(minutes=5)) == T0 + timedelta(minutes=5)
    berlin = datetime(2026, 11, 24, 14, 7, tzinfo=timezone(timedelta(hours=1)))
    assert bucket_start(berlin) == T0 + timedelta(minutes=65)


def test_it_counts_heartbeats_per_bucket(db):
    write(db, beat(T0), beat(T0 + timedelta(seconds=30)), msg("health", HEALTH, T0),
          beat(T0 + timedelta(minutes=4, seconds=59)), beat(T0 + timedelta(minutes=5)))
    assert buckets(db) == {(SCREEN, T0): (3, 4), (SCREEN, T0 + timedelta(minutes=5)): (1, 1)}


def test_later_batches_add_to_the_same_bucket(db):
    write(db, beat(T0))
    write(db, beat(T0 + timedelta(seconds=30)), msg("logs/info", {
        "timestamp": "2026-11-24T12:00:30Z", "message": "hello"}, T0 + timedelta(seconds=30)))
    assert buckets(db) == {(SCREEN, T0): (2, 3)}


def test_each_client_has_its_own_buckets(db):
    write(db, beat(T0), beat(T0, OTHER), beat(T0 + timedelta(seconds=1), OTHER))
    assert buckets(db) == {(SCREEN, T0): (1, 1), (OTHER, T0): (2, 2)}


def test_retained_copies_are_not_activity(db):
    write(db, msg("status", {"status": "online", "session": 3}, retained=True),
          msg("service_failed", FAILED, retained=True))
    assert buckets(db) == {}
    with db.sessions() as session:
        assert session.get(Client, SCREEN) is not None  # the client is known all the same


def test_a_last_will_offline_is_not_activity(db):
    write(db, msg("status", {"status": "offline", "session": 3}),
          msg("status", {"status": "online", "session": 4}, T0 + timedelta(minutes=5)))
    assert buckets(db) == {(SCREEN, T0 + timedelta(minutes=5)): (0, 1)}


def test_deleting_a_client_deletes_its_activity(db):
    write(db, beat(T0))
    with db.sessions() as session, session.begin():
        session.execute(delete(Client).where(Client.uuid == SCREEN))
    assert buckets(db) == {}


def test_the_timeline_is_every_bucket_of_the_window_zero_filled_in_order(db):
    write(db, beat(T0))
    now = T0 + timedelta(hours=1, minutes=2)
    line = timeline(db, now)
    assert len(line.buckets) == 288
    starts = [b.start for b in line.buckets]
    assert starts == sorted(starts)
    assert all(b - a == timedelta(minutes=5) for a, b in zip(starts, starts[1:], strict=False))
    assert starts[-1] == T0 + timedelta(hours=1) == bucket_start(now)
    assert line.start == starts[0] and line.end == starts[-1] + timedelta(minutes=5)
    assert line.end - line.start == timedelta(hours=24)


def test_the_timeline_flags_online_offline_and_no_data(db):
    first = T0 - timedelta(hours=2)  # first seen two hours before T0
    write(db, beat(first), beat(first + timedelta(seconds=30)))
    write(db, beat(T0 - timedelta(minutes=10)))
    write(db, msg("health", HEALTH, T0))
    line = timeline(db, T0 + timedelta(minutes=6))
    by_start = {b.start: b for b in line.buckets}
    assert by_start[first - timedelta(minutes=5)].state == NO_DATA  # before first seen
    assert (by_start[first].state, by_start[first].heartbeats) == (ONLINE, 2)
    assert by_start[first + timedelta(minutes=5)].state == OFFLINE
    assert by_start[T0 - timedelta(minutes=10)].state == ONLINE
    assert by_start[T0 - timedelta(minutes=5)].state == OFFLINE
    assert (by_start[T0].state, by_start[T0].heartbeats, by_start[T0].messages) == (ONLINE, 0, 1)
    assert line.buckets[-1].state == NO_DATA  # the current bucket, nothing in it yet
    assert (line.heartbeats, line.messages, line.online_seconds) == (3, 4, 3 * 300)


def test_the_current_bucket_is_online_once_something_arrived(db):
    write(db, beat(T0 + timedelta(seconds=10)))
    line = timeline(db, T0 + timedelta(seconds=20))
    assert line.buckets[-1].start == T0 and line.buckets[-1].state == ONLINE
    assert {b.state for b in line.buckets[:-1]} == {NO_DATA}


def test_the_timeline_leaves_out_buckets_outside_the_window(db):
    write(db, beat(T0 - timedelta(hours=30)))
    write(db, beat(T0 + timedelta(minutes=10)))  # after `now`: a clock that jumped
    line = timeline(db, T0)
    assert line.heartbeats == 0
    assert {b.state for b in line.buckets} == {OFFLINE, NO_DATA}


def test_the_timeline_of_an_unknown_client_is_none(db):
    assert timeline(db, T0, uuid=OTHER) is None

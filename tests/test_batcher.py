"""The batcher's step function, called once at a time with time injected (no threads)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from core.contract import parse_message
from core.db import make_engine, make_session_factory
from core.models import Client, IngestRejection
from listener.batcher import Batcher

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def heartbeat(n: int):
    return parse_message(f"infoscreen/00000000-0000-0000-0000-{n:012d}/heartbeat", b"{}", NOW)


def clients(db) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(Client))


def make(db, clock, **kw) -> Batcher:
    return Batcher(db.sessions, clock=lambda: NOW, monotonic=clock, **kw)


def test_it_writes_a_full_batch_at_once(db):
    clock = Clock()
    batcher = make(db, clock, batch_size=3, flush_seconds=10)
    for n in range(4):
        batcher.put(heartbeat(n))
    assert batcher.step() is True  # three written, one more waiting
    assert clients(db) == 3
    assert batcher.backlog() == 1


def test_it_waits_for_the_flush_interval_before_writing_a_partial_batch(db):
    clock = Clock()
    batcher = make(db, clock, batch_size=100, flush_seconds=0.2)
    batcher.put(heartbeat(1))
    assert batcher.step() is False
    assert clients(db) == 0
    clock.now += 0.2
    batcher.step()
    assert clients(db) == 1
    assert batcher.backlog() == 0


def test_one_batch_is_one_transaction_with_its_rejections(db):
    clock = Clock()
    batcher = make(db, clock, batch_size=3)
    batcher.put(heartbeat(1))
    batcher.put(parse_message("infoscreen/x/heartbeat", b"{}", NOW))
    batcher.put(heartbeat(2))
    batcher.step()
    with db.sessions() as session:
        assert session.get(IngestRejection, "invalid_client_id").count == 1
    assert clients(db) == 2
    assert batcher.rejected == {"invalid_client_id": 1}


def test_a_database_outage_holds_the_batch_and_retries_with_back_off(db):
    clock = Clock()
    down = make_session_factory(make_engine(UNREACHABLE))
    batcher = Batcher(down, clock=lambda: NOW, monotonic=clock, batch_size=2)
    batcher.put(heartbeat(1))
    batcher.put(heartbeat(2))
    assert batcher.step() is False
    assert batcher.failures == 1 and batcher.backlog() == 2
    batcher.session_factory = db.sessions  # the database is back...
    assert batcher.step() is False  # ...but the retry is not due yet
    assert clients(db) == 0
    clock.now = batcher.retry_at
    batcher.step()
    assert clients(db) == 2
    assert batcher.failures == 0 and batcher.backlog() == 0


def test_a_message_the_database_refuses_is_counted_and_the_rest_is_stored(db):
    clock = Clock()
    batcher = make(db, clock, batch_size=3)
    poison = parse_message(
        "infoscreen/00000000-0000-0000-0000-000000000009/logs/info",
        b'{"timestamp": "2026-11-24T12:00:00Z", "message": "nul \\u0000 byte"}', NOW)
    batcher.put(heartbeat(1))
    batcher.put(poison)
    batcher.put(heartbeat(2))
    batcher.step()
    assert batcher.backlog() == 0
    if db.kind == "postgresql":  # Postgres cannot store a NUL character in text
        assert batcher.rejected == {"unstorable": 1}
        with db.sessions() as session:
            assert session.get(IngestRejection, "unstorable").count == 1
    assert clients(db) >= 2


def test_acks_for_unknown_commands_are_counted_as_rejections(db):
    clock = Clock()
    batcher = make(db, clock, batch_size=1, flush_seconds=10)
    batcher.put(parse_message(
        "infoscreen/00000000-0000-0000-0000-000000000001/commands/ack",
        b'{"command_id": "9b2c1f3e-0d4a-4c5b-8e7f-1a2b3c4d5e6f", "status": "accepted"}', NOW))
    batcher.step()
    assert batcher.rejected["unknown_command"] == 1
    assert batcher.stored["command_ack"] == 1  # a valid message, stored as far as it goes


def test_a_batch_of_retained_alerts_alone_is_stored_whole(db):
    known = "00000000-0000-0000-0000-000000000001"
    batcher = make(db, Clock(), batch_size=100)
    batcher.put(heartbeat(1))
    batcher.step(force=True)
    failed = b'{"unit": "player.service", "failed_at": "2026-11-24T11:00:00Z"}'
    for uuid in (known, "00000000-0000-0000-0000-000000000002"):
        batcher.put(parse_message(f"infoscreen/{uuid}/service_failed", failed, NOW,
                                  retained=True))
    batcher.step(force=True)
    with db.sessions() as session:
        alerts = session.scalars(select(Client.uuid).where(Client.service_failed_at.is_not(None)))
        assert len(list(alerts)) == 2
        assert session.scalar(select(func.count()).select_from(IngestRejection)) == 0
    assert batcher.rejected == {}

"""Exactly one acting scheduler among several (scheduler.leader): the Postgres advisory lock,
taken and handed over between two engines as two scheduler processes would hold them."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.db import make_engine
from scheduler.leader import LOCK_KEY, Leadership


@pytest.fixture
def postgres(db):
    if db.kind != "postgresql":
        pytest.skip("the advisory lock is Postgres's; SQLite runs a single scheduler")
    return db


@pytest.fixture
def two(postgres):
    engines = [make_engine(postgres.url) for _ in range(2)]
    leaders = [Leadership(engine) for engine in engines]
    yield leaders
    for leader, engine in zip(leaders, engines, strict=True):
        leader.release()
        engine.dispose()


def lock_holders(db) -> list[int]:
    with db.engine.connect() as conn:
        return list(conn.scalars(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objid = :key AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())"), {"key": LOCK_KEY}))


def test_exactly_one_of_two_schedulers_holds(postgres, two):
    first, second = two
    assert first.holds()
    assert not second.holds()
    assert first.holds()  # holding again is a cheap check, not a second lock
    assert not second.holds()
    assert len(lock_holders(postgres)) == 1


def test_the_other_takes_over_after_the_holder_releases(postgres, two):
    first, second = two
    assert first.holds()
    first.release()
    assert lock_holders(postgres) == []
    assert second.holds()
    assert not first.holds()


def test_the_other_takes_over_when_the_holders_connection_dies(postgres, two):
    first, second = two
    assert first.holds()
    [pid] = lock_holders(postgres)
    with postgres.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert not first.holds()  # notices, and does not act this cycle
    assert second.holds()
    assert not first.holds()


def test_on_sqlite_every_scheduler_holds(db):
    if db.kind != "sqlite":
        pytest.skip("SQLite only: there holds() has no lock to take")
    engine = make_engine(db.url)
    try:
        assert Leadership(engine).holds()
        assert Leadership(engine).holds()
    finally:
        engine.dispose()

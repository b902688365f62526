"""The scheduler's watch over the fleet (scheduler.health): liveness transitions and crash
detection, one step at a time at pinned times, on both databases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from core.db import make_engine, make_session_factory
from core.models import Client, Event
from scheduler import health
from scheduler.health import FollowLiveness, detect_crashes
from tests.helpers import wait_until

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HALL = "00000000-0000-0000-0000-000000000001"
GYM = "00000000-0000-0000-0000-000000000002"
LIBRARY = "00000000-0000-0000-0000-000000000003"
STALE, DOWN = 90, 300
follow_liveness = FollowLiveness(STALE, DOWN)


def seconds(n: float) -> datetime:
    return NOW + timedelta(seconds=n)


def add(db, uuid: str, *, seen: datetime = NOW, liveness: str | None = None,
        process_status: str | None = None) -> None:
    with db.sessions() as session, session.begin():
        session.add(Client(uuid=uuid, first_seen_at=seen, last_seen_at=seen, liveness=liveness,
                           process_status=process_status))


def heard_from(db, uuid: str, at: datetime, **values) -> None:
    with db.sessions() as session, session.begin():
        session.execute(update(Client).where(Client.uuid == uuid)
                        .values(last_seen_at=at, **values))


def step(db, job, at: datetime) -> bool:
    with db.sessions() as session, session.begin():
        return job(session, at)


def client(db, uuid: str) -> Client:
    with db.sessions() as session:
        return session.get(Client, uuid)


def events(db) -> list[tuple[str, str | None, datetime]]:
    with db.sessions() as session:
        return [(e.type, e.client_uuid, e.occurred_at)
                for e in session.scalars(select(Event).order_by(Event.id))]


def test_a_silent_client_goes_stale_then_down_then_recovers_with_one_event_each(db):
    add(db, HALL, liveness="alive")
    assert not step(db, follow_liveness, seconds(STALE))  # exactly at the limit: stale
    assert client(db, HALL).liveness == "stale"
    step(db, follow_liveness, seconds(STALE + 60))  # still stale, nothing new
    step(db, follow_liveness, seconds(DOWN))
    assert client(db, HALL).liveness == "down"
    heard_from(db, HALL, seconds(DOWN + 30))
    step(db, follow_liveness, seconds(DOWN + 31))
    stored = client(db, HALL)
    assert (stored.liveness, stored.liveness_changed_at) == ("alive", seconds(DOWN + 31))
    assert events(db) == [
        ("client_stale", HALL, seconds(STALE)),
        ("client_down", HALL, seconds(DOWN)),
        ("client_recovered", HALL, seconds(DOWN + 31)),
    ]


def test_an_event_names_when_the_client_was_last_seen(db):
    add(db, HALL, liveness="alive")
    step(db, follow_liveness, seconds(STALE))
    with db.sessions() as session:
        event = session.scalars(select(Event)).one()
    assert (event.severity, event.details) == ("warning", {"lastSeenAt": NOW.isoformat()})


def test_a_stale_client_that_speaks_again_recovers_without_going_down(db):
    add(db, HALL, liveness="alive")
    step(db, follow_liveness, seconds(STALE))
    heard_from(db, HALL, seconds(STALE + 10))
    step(db, follow_liveness, seconds(STALE + 11))
    assert client(db, HALL).liveness == "alive"
    assert [e[0] for e in events(db)] == ["client_stale", "client_recovered"]


def test_a_new_client_becomes_alive_without_an_event(db):
    add(db, HALL)
    assert not step(db, follow_liveness, seconds(1))
    stored = client(db, HALL)
    assert (stored.liveness, stored.liveness_changed_at) == ("alive", seconds(1))
    assert events(db) == []


def test_a_client_unseen_while_the_scheduler_was_off_goes_straight_to_down(db):
    add(db, HALL, liveness="alive")
    step(db, follow_liveness, seconds(DOWN + 3600))
    assert client(db, HALL).liveness == "down"
    assert events(db) == [("client_down", HALL, seconds(DOWN + 3600))]


def test_rerunning_the_step_at_the_same_time_changes_nothing(db):
    add(db, HALL, liveness="alive")
    add(db, GYM, seen=seconds(-STALE), liveness="alive")
    add(db, LIBRARY, seen=seconds(-DOWN), liveness="stale")
    step(db, follow_liveness, NOW)
    before = [(c.uuid, c.liveness, c.liveness_changed_at)
              for c in (client(db, u) for u in (HALL, GYM, LIBRARY))]
    assert [b[1] for b in before] == ["alive", "stale", "down"]
    assert not step(db, follow_liveness, NOW)
    assert not step(db, follow_liveness, NOW)
    after = [(c.uuid, c.liveness, c.liveness_changed_at)
             for c in (client(db, u) for u in (HALL, GYM, LIBRARY))]
    assert after == before
    assert [e[:2] for e in events(db)] == [("client_stale", GYM), ("client_down", LIBRARY)]


def test_a_mass_change_takes_one_step_per_chunk(db, monkeypatch):
    monkeypatch.setattr(health, "CHUNK", 1)
    for uuid in (HALL, GYM, LIBRARY):
        add(db, uuid, liveness="alive")
    at = seconds(DOWN)
    assert step(db, follow_liveness, at)
    assert step(db, follow_liveness, at)
    assert step(db, follow_liveness, at)  # the third one moved: it cannot know it was the last
    assert not step(db, follow_liveness, at)
    assert {client(db, u).liveness for u in (HALL, GYM, LIBRARY)} == {"down"}
    assert sorted(e[1] for e in events(db)) == [HALL, GYM, LIBRARY]


def test_a_crash_is_reported_once_however_many_cycles_it_lasts(db):
    add(db, HALL, process_status="crashed")
    add(db, GYM, process_status="running")
    for minute in range(5):
        assert not step(db, detect_crashes, seconds(60 * minute))
    assert client(db, HALL).crash_reported_at == NOW
    assert client(db, GYM).crash_reported_at is None
    with db.sessions() as session:
        event = session.scalars(select(Event)).one()
    assert (event.type, event.client_uuid, event.severity, event.occurred_at) == (
        "crash_detected", HALL, "error", NOW)
    assert event.details == {"reason": "process_crashed", "lastSeenAt": NOW.isoformat()}


def test_a_crash_is_cleared_when_the_player_runs_again(db):
    add(db, HALL, process_status="crashed")
    step(db, detect_crashes, NOW)
    heard_from(db, HALL, seconds(30), process_status="running")
    step(db, detect_crashes, seconds(31))
    step(db, detect_crashes, seconds(32))
    assert client(db, HALL).crash_reported_at is None
    assert [e[:2] for e in events(db)] == [("crash_detected", HALL), ("crash_cleared", HALL)]
    # A new crash is a new report.
    heard_from(db, HALL, seconds(60), process_status="crashed")
    step(db, detect_crashes, seconds(61))
    assert [e[0] for e in events(db)][-1] == "crash_detected"


def test_crash_detection_moves_one_chunk_per_step(db, monkeypatch):
    monkeypatch.setattr(health, "CHUNK", 1)
    add(db, HALL, process_status="crashed")
    add(db, GYM, process_status="crashed")
    assert step(db, detect_crashes, NOW)
    assert step(db, detect_crashes, NOW)
    assert not step(db, detect_crashes, NOW)
    assert sorted(e[1] for e in events(db)) == [HALL, GYM]


@pytest.mark.parametrize("job", [follow_liveness, detect_crashes],
                         ids=["follow_liveness", "detect_crashes"])
def test_two_schedulers_stepping_at_once_report_each_change_once(db, job):
    """If two schedulers ever act at once (a leadership hand-over mid-cycle), the one that
    waited for the other's row locks must not move the same clients again."""
    if db.kind != "postgresql":
        pytest.skip("SQLite runs one writer at a time: the second step starts after the first")
    for uuid in (HALL, GYM):
        add(db, uuid, liveness="alive", process_status="crashed")
    at = seconds(DOWN)
    other = make_engine(db.url)
    try:
        with db.sessions() as first, first.begin():
            job(first, at)  # holds its row locks until it commits

            def second_step() -> None:
                with make_session_factory(other)() as session, session.begin():
                    job(session, at)

            second = threading.Thread(target=second_step)
            second.start()
            with db.engine.connect() as probe:
                wait_until(lambda: probe.scalar(text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted")), timeout=10,
                    message="the second step to wait for the first one's row locks")
        second.join(timeout=10)
        assert not second.is_alive()
    finally:
        other.dispose()
    assert sorted(e[1] for e in events(db)) == [HALL, GYM]

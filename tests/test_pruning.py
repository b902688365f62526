"""The scheduler's pruning of history past its retention, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from core.config import Settings
from core.models import (
    Client,
    ClientActivity,
    ClientCommand,
    CommandTransition,
    Event,
    Notification,
    RateLimitCounter,
)
from scheduler import pruning
from scheduler.pruning import PruneHistory
from scheduler.service import build_jobs

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SCREEN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
PRUNE = PruneHistory(activity_hours=48, event_days=90, command_days=180)


def seed_client(session) -> None:
    session.add(Client(uuid=SCREEN, first_seen_at=NOW - timedelta(days=400), last_seen_at=NOW))
    session.flush()


def seed_activity(db, *ages_in_hours: float) -> None:
    with db.sessions() as session, session.begin():
        seed_client(session)
        session.add_all(ClientActivity(client_uuid=SCREEN, bucket_start=NOW - timedelta(hours=h),
                                       heartbeats=10, messages=11) for h in ages_in_hours)


def kept_activity(db) -> list[float]:
    with db.sessions() as session:
        starts = session.scalars(select(ClientActivity.bucket_start)
                                 .order_by(ClientActivity.bucket_start.desc()))
        return [(NOW - s).total_seconds() / 3600 for s in starts]


def step(db, job=PRUNE) -> bool:
    with db.sessions() as session, session.begin():
        return job(session, NOW)


def count(db, model) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_it_prunes_old_activity_buckets(db):
    seed_activity(db, 0, 24, 47.9, 48, 48.1, 100)
    assert step(db) is False
    assert kept_activity(db) == [0, 24, 47.9, 48]


def test_it_prunes_in_bounded_chunks_and_says_when_more_is_waiting(db, monkeypatch):
    monkeypatch.setattr(pruning, "CHUNK", 2)
    seed_activity(db, 1, 50, 51, 52, 53, 54)
    assert step(db) is True
    assert step(db) is True
    assert step(db) is False
    assert kept_activity(db) == [1]


def test_it_prunes_old_events_and_final_commands_with_their_history(db):
    with db.sessions() as session, session.begin():
        seed_client(session)
        for days in (1, 91):
            session.add(Event(type="client_down", severity="error", client_uuid=SCREEN,
                              occurred_at=NOW - timedelta(days=days)))
        for n, (state, finished_days) in enumerate(
                [("completed", 181), ("failed", 10), ("queued", None)]):
            issued = NOW - timedelta(days=200)
            session.add(ClientCommand(
                id=f"00000000-0000-4000-8000-00000000000{n}", client_uuid=SCREEN,
                action="restart_app", state=state, reason="r", requested_by="olga",
                forced=False, issued_at=issued, expires_at=issued, completion_seconds=120,
                finished_at=None if finished_days is None else NOW - timedelta(days=finished_days),
            ))
            session.flush()
            session.add(CommandTransition(command_id=f"00000000-0000-4000-8000-00000000000{n}",
                                          state=state, at=issued, source="test"))
        for days in (1, 91):  # the notification log is kept as long as the events
            session.add(Notification(channel_shown="json://h/…", event_type="client_down",
                                     severity="error", kind="alert", title="t", body="b",
                                     state="sent", attempts=1,
                                     created_at=NOW - timedelta(days=days)))
    assert step(db) is False
    with db.sessions() as session:
        assert session.scalars(select(Event.occurred_at)).all() == [NOW - timedelta(days=1)]
        assert session.scalars(select(Notification.created_at)).all() == [
            NOW - timedelta(days=1)]
        assert sorted(session.scalars(select(ClientCommand.state))) == ["failed", "queued"]
    assert count(db, CommandTransition) == 2


def test_it_prunes_expired_sign_in_counters_only(db):
    with db.sessions() as session, session.begin():
        for key, seconds in (("ended", -60), ("ending now", 0), ("live", 1)):
            session.add(RateLimitCounter(key=key, count=3,
                                         expires_at=NOW + timedelta(seconds=seconds)))
    assert step(db) is False
    with db.sessions() as session:
        assert session.scalars(select(RateLimitCounter.key)).all() == ["live"]


def test_the_retention_settings_reach_the_scheduler_job():
    settings = Settings.model_validate({"ACTIVITY_RETENTION_HOURS": 24,
                                        "EVENT_RETENTION_DAYS": 7, "COMMAND_RETENTION_DAYS": 30})
    job = dict(build_jobs(settings, publisher=object(), session_factory=None))["prune_history"]
    assert (job.activity, job.events, job.commands) == (
        timedelta(hours=24), timedelta(days=7), timedelta(days=30))


def test_it_does_nothing_when_nothing_is_old(db):
    seed_activity(db, 0, 1)
    assert step(db) is False
    assert count(db, ClientActivity) == 2

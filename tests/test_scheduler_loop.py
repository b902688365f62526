"""The scheduler's loop: each job is stepped until it has nothing left, errors contained."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.loop import Scheduler

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_cycle_steps_each_job_until_it_reports_no_more_work(db):
    calls: list[str] = []
    remaining = {"sweep": 3}

    def sweep(session, now):
        calls.append("sweep")
        remaining["sweep"] -= 1
        assert now == NOW
        return remaining["sweep"] > 0

    def detect(session, now):
        calls.append("detect")
        return False

    Scheduler(db.sessions, [("sweep", sweep), ("detect", detect)], clock=lambda: NOW).run_cycle()
    assert calls == ["sweep", "sweep", "sweep", "detect"]


def test_a_failing_job_does_not_stop_the_others(db):
    calls: list[str] = []

    def broken(session, now):
        raise RuntimeError("boom")

    def fine(session, now):
        calls.append("fine")
        return False

    Scheduler(db.sessions, [("broken", broken), ("fine", fine)], clock=lambda: NOW).run_cycle()
    assert calls == ["fine"]


def test_stop_ends_the_loop_after_the_current_cycle(db):
    scheduler = Scheduler(db.sessions, [], clock=lambda: NOW, poll_seconds=60)

    def stop_during_cycle(session, now):
        scheduler.stop()
        return False

    scheduler.jobs = [("stop", stop_during_cycle)]
    scheduler.run()  # returns at once instead of waiting 60 s
    assert scheduler.stopping.is_set()


def test_a_scheduler_that_is_not_the_leader_runs_no_job(db):
    calls: list[str] = []
    turns = iter([False, True])

    def sweep(session, now):
        calls.append("sweep")
        return False

    scheduler = Scheduler(db.sessions, [("sweep", sweep)], clock=lambda: NOW,
                          leader=lambda: next(turns))
    scheduler.run_cycle()
    assert calls == []
    scheduler.run_cycle()  # it became the leader
    assert calls == ["sweep"]

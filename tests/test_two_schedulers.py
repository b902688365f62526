"""Two schedulers running together for 5 minutes with auto-recovery on never issue two power
commands to one client inside the lockout window.

Two scheduler processes (spawned, each with its own engine) run the real cycle from
`build_jobs` over one database, on a shared clock that runs 30 times faster than real time,
so 5 minutes of scheduler time take 10 s. Most of the fleet is crashed with fresh
heartbeats; half of the crashed screens complete every command, the other half never answer
(their commands expire). Variants: the Postgres leader lock with a hand-over half way, and
both schedulers acting at once (only the database lockout stands between them).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from core import commands
from core.clock import utc_now
from core.commands import AUTO_RECOVERY, Ack
from core.config import Settings
from core.db import make_engine, make_session_factory
from core.models import OPEN_COMMAND_STATES, Client, ClientCommand, Event

pytestmark = pytest.mark.slow

SPEED = 30.0  # scheduler seconds per wall-clock second
SCHEDULER_SECONDS = 300.0
LOCKOUT = 60
EXPIRY = 90  # longer than the lockout: a command that is never answered outlives the window
FLEET, CRASHED = 20, 16
COMPLETES_AFTER = 5.0  # scheduler seconds until an answering screen reports completed


@dataclass(frozen=True)
class FastClock:
    """The shared accelerated clock: CLOCK_MONOTONIC is the same for every process here."""

    start: datetime
    t0: float

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * SPEED)


class NoBroker:
    """A publisher that takes every message and never acknowledges one: commands stay
    queued for the screens (simulated by the test), events and states stay in flight."""

    connected = True

    def publish(self, topic: str, payload: bytes, **_kw: Any) -> bool:
        return True


class Count(logging.Handler):
    def __init__(self, needle: str, level: int):
        super().__init__(level)
        self.needle, self.count = needle, 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.count += 1


def run_scheduler(settings_values: dict, start: datetime, t0: Any, leader: bool,
                  lead_at_once: bool, until: float, ready: Any, go: Any, results: Any) -> None:
    """One scheduler process: the real jobs, its own engine, its own leadership."""
    from scheduler.leader import Leadership
    from scheduler.loop import Scheduler
    from scheduler.service import build_jobs

    logging.basicConfig(level=logging.WARNING)
    failures = Count("failed", logging.ERROR)
    refusals = Count("auto-recovery skipped", logging.INFO)
    logging.getLogger("scheduler.loop").addHandler(failures)
    recovery_log = logging.getLogger("scheduler.recovery")
    recovery_log.setLevel(logging.INFO)
    recovery_log.addHandler(refusals)
    recovery_log.propagate = False

    settings = Settings.model_validate(settings_values)
    engine = make_engine(settings.database_url, writer=True)
    sessions = make_session_factory(engine)
    leadership = Leadership(engine) if leader else None
    if leadership and lead_at_once:
        assert leadership.holds()
    acting = [0]

    def count_acting_cycle(_session: Any, _now: datetime) -> bool:
        acting[0] += 1
        return False

    ready.set()
    go.wait()
    clock = FastClock(start, t0.value)
    scheduler = Scheduler(
        sessions, [*build_jobs(settings, NoBroker(), sessions),  # type: ignore[arg-type]
                   ("count", count_acting_cycle)],
        clock=clock, poll_seconds=settings.scheduler_poll_seconds,
        leader=leadership.holds if leadership else None,
    )
    timer = threading.Timer(until * SCHEDULER_SECONDS / SPEED, scheduler.stop)
    timer.start()
    try:
        scheduler.run()
    finally:
        timer.cancel()
        if leadership:
            leadership.release()
        engine.dispose()
    results.put({"acting_cycles": acting[0], "failures": failures.count,
                 "refusals": refusals.count})


def keep_the_fleet_going(url: str, clock: FastClock, answering: set[str],
                         stop: threading.Event) -> None:
    """The screens: fresh heartbeats, and the answering ones complete their commands."""
    engine = make_engine(url, writer=True)
    sessions = make_session_factory(engine)
    try:
        while not stop.wait(0.05):
            now = clock()
            try:
                with sessions() as session, session.begin():
                    session.execute(update(Client).values(last_seen_at=now,
                                                          last_heartbeat_at=now))
                    due = session.scalars(select(ClientCommand).where(
                        ClientCommand.state.in_(OPEN_COMMAND_STATES),
                        ClientCommand.client_uuid.in_(answering),
                        ClientCommand.issued_at <= now - timedelta(seconds=COMPLETES_AFTER),
                    )).all()
                    commands.apply_acks(session, [
                        Ack(c.client_uuid, c.id, status, now)
                        for c in due
                        for status in ("accepted", "execution_started", "completed")
                    ])
            except OperationalError:
                # Updating every row at once can deadlock with a scheduler's own updates on
                # Postgres; the loser is rolled back. The screens go on, as real ones would;
                # a thread that died here would leave the fleet silent and the test vacuous.
                continue
    finally:
        engine.dispose()


def seed(db, start: datetime) -> tuple[list[str], set[str]]:
    uuids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1, FLEET + 1)]
    crashed = uuids[:CRASHED]
    with db.sessions() as session, session.begin():
        for i, uuid in enumerate(uuids):
            session.add(Client(
                uuid=uuid, first_seen_at=start, last_seen_at=start,
                process_status="crashed" if uuid in crashed else "running",
                process_status_at=start - timedelta(seconds=FLEET - i),
            ))
    return crashed, set(crashed[::2])


@pytest.mark.parametrize("mode", ["leader_hand_over", "both_act"])
def test_two_schedulers_never_issue_two_power_commands_inside_the_lockout(db, mode):
    if mode == "leader_hand_over" and db.kind != "postgresql":
        pytest.skip("the leader lock is Postgres's; on SQLite both schedulers act (both_act)")
    start = utc_now().replace(microsecond=0)
    crashed, answering = seed(db, start)
    settings = {
        "DATABASE_URL": db.url, "CRASH_RECOVERY_ENABLED": True,
        "COMMAND_LOCKOUT_SECONDS": LOCKOUT, "COMMAND_EXPIRY_SECONDS": EXPIRY,
        "CRASH_RECOVERY_MAX_PER_MINUTE": 1000, "SCHEDULER_POLL_SECONDS": 0.05,
    }
    leader = mode == "leader_hand_over"
    context = multiprocessing.get_context("spawn")
    t0, go, results = context.Value("d", 0.0), context.Event(), context.Queue()
    # In the hand-over variant the first one leads from the start and stops half way.
    plans = [(leader, leader, 0.5 if leader else 1.0), (leader, False, 1.0)]
    readies = [context.Event() for _ in plans]
    workers = [
        context.Process(target=run_scheduler, args=(
            settings, start, t0, use_leader, lead_at_once, until, ready, go, results))
        for (use_leader, lead_at_once, until), ready in zip(plans, readies, strict=True)
    ]
    stop = threading.Event()
    screens = None
    try:
        for worker in workers:
            worker.start()
        for ready in readies:
            assert ready.wait(30), "scheduler process ready"
        t0.value = time.monotonic()
        clock = FastClock(start, t0.value)
        go.set()
        screens = threading.Thread(target=keep_the_fleet_going,
                                   args=(db.url, clock, answering, stop))
        screens.start()
        stats = [results.get(timeout=SCHEDULER_SECONDS / SPEED + 30) for _ in workers]
    finally:
        stop.set()
        if screens:
            screens.join(timeout=10)
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
    assert [w.exitcode for w in workers] == [0, 0]

    assert all(s["acting_cycles"] > 0 for s in stats), f"both schedulers acted: {stats}"
    assert sum(s["failures"] for s in stats) == 0, f"no job failed: {stats}"
    with db.sessions() as session:
        issued = session.scalars(select(ClientCommand).order_by(
            ClientCommand.client_uuid, ClientCommand.issued_at)).all()
        given_up = session.scalars(
            select(Event.client_uuid).where(Event.type == "auto_recovery_exhausted")).all()
    by_client: dict[str, list[ClientCommand]] = {}
    for command in issued:
        by_client.setdefault(command.client_uuid, []).append(command)
    window = timedelta(seconds=LOCKOUT)
    for client_uuid, its in by_client.items():
        times = [c.issued_at for c in its]
        assert all(b - a >= window for a, b in zip(times, times[1:], strict=False)), (
            f"{client_uuid}: power commands inside the lockout: "
            f"{[(c.action, c.issued_at.isoformat(), c.state) for c in its]}")
    assert not any(c.forced for c in issued)
    assert {c.requested_by for c in issued} == {AUTO_RECOVERY}
    # Not vacuous: every crashed screen was restarted again and again, and escalated.
    assert set(by_client) == set(crashed)
    assert all(len(its) >= 3 for its in by_client.values()), {
        u: len(its) for u, its in by_client.items()}
    assert any(c.action == "reboot_host" for c in issued)
    if leader:
        # Two schedulers acting at once may both give up on a client (no lock guards that
        # event); one acting scheduler gives up once per client and window.
        assert len(given_up) == len(set(given_up)), given_up
    # The database lockout itself refused commands (an unanswered command is open past the
    # window), not only the candidate query.
    assert sum(s["refusals"] for s in stats) > 0, stats

"""The scheduler's loop, built from step functions that tests call once (STYLE.md).

A job is `job(session, now) -> bool`: it does one unit of work in the transaction it is
given and returns True when more is waiting. A cycle runs every job until it has nothing
left; the loop runs a cycle every poll interval and stops between steps on SIGTERM. A job
that needs settings is an object built with them (scheduler/service.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock, utc_now
from core.scheduler_state import record_good_cycle
from scheduler.metrics import SchedulerMetrics

log = logging.getLogger(__name__)

Job = Callable[[Session, datetime], bool]
MAX_STEPS_PER_JOB = 1000  # one job cannot starve the others within a cycle


class Scheduler:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        jobs: Sequence[tuple[str, Job]],
        *,
        clock: Clock = utc_now,
        poll_seconds: float = 5.0,
        leader: Callable[[], bool] | None = None,
        metrics: SchedulerMetrics | None = None,
    ):
        self.session_factory = session_factory
        self.jobs = list(jobs)
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.leader = leader
        self.stopping = threading.Event()
        self.failures: set[str] = set()  # the jobs that failed in the current cycle
        self.metrics = metrics

    def step(self, name: str, job: Job) -> bool:
        """One step of one job in its own transaction. Errors are logged, never raised."""
        try:
            with self.session_factory() as session, session.begin():
                return job(session, self.clock())
        except Exception:
            log.exception("job %s failed; it runs again next cycle", name)
            self.failures.add(name)
            if self.metrics is not None:
                self.metrics.job_errors.labels(name).inc()
            return False

    def run_cycle(self) -> dict[str, float]:
        """Every job until it has nothing left; returns each job's time in ms (empty when
        another scheduler is the acting one)."""
        if self.leader is not None and not self.leader():
            if self.metrics is not None:
                self.metrics.cycle({}, acting=False, good_at=None)
            return {}  # another scheduler acts; this one stands by
        self.failures = set()
        timings: dict[str, float] = {}
        for name, job in self.jobs:
            started = time.monotonic()
            steps = 0
            while not self.stopping.is_set() and steps < MAX_STEPS_PER_JOB:
                steps += 1
                if not self.step(name, job):
                    break
            timings[name] = (time.monotonic() - started) * 1000
            log.debug("job %s: %d steps in %.1f ms", name, steps, timings[name])
        good = not self.failures and not self.stopping.is_set() and self._record_good_cycle()
        if self.metrics is not None:
            self.metrics.cycle(timings, acting=True, good_at=time.time() if good else None)
        return timings

    def _record_good_cycle(self) -> bool:
        """For readiness (core.scheduler_state): a failure here is logged, not raised."""
        try:
            with self.session_factory() as session, session.begin():
                record_good_cycle(session, self.clock())
        except Exception:
            log.exception("could not record the good cycle")
            return False
        return True

    def run(self) -> None:
        names = ", ".join(name for name, _ in self.jobs) or "none yet"
        log.info("scheduler running every %.1f s; jobs: %s", self.poll_seconds, names)
        while not self.stopping.is_set():
            self.run_cycle()
            self.stopping.wait(self.poll_seconds)
        log.info("scheduler stopped")

    def stop(self, *_args: Any) -> None:
        self.stopping.set()

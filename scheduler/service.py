"""Wiring of the scheduler process."""

from __future__ import annotations

import signal

from core.config import Settings
from core.db import make_engine, make_session_factory
from scheduler.loop import Job, Scheduler

# (name, job) pairs; the commands and alerting work fills this in.
JOBS: list[tuple[str, Job]] = []


def run(settings: Settings) -> None:
    scheduler = Scheduler(
        make_session_factory(make_engine(settings.database_url, writer=True)),
        JOBS,
        poll_seconds=settings.scheduler_poll_seconds,
    )
    signal.signal(signal.SIGTERM, scheduler.stop)
    signal.signal(signal.SIGINT, scheduler.stop)
    scheduler.run()

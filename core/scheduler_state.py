"""When the acting scheduler last finished a cycle in which no job failed: written by the
scheduler, read by the web server's readiness check (so several web workers agree)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.models import SchedulerState

GOOD_CYCLE = "last_good_cycle"


def record_good_cycle(session: Session, now: datetime) -> None:
    written = session.execute(update(SchedulerState).where(SchedulerState.name == GOOD_CYCLE)
                              .values(value=now.isoformat(), updated_at=now)).rowcount
    if not written:
        try:
            with session.begin_nested():
                session.add(SchedulerState(name=GOOD_CYCLE, value=now.isoformat(),
                                           updated_at=now))
        except IntegrityError:  # another scheduler wrote it first: it is fresh either way
            pass


def last_good_cycle(session: Session) -> datetime | None:
    return session.scalar(select(SchedulerState.updated_at)
                          .where(SchedulerState.name == GOOD_CYCLE))

"""Deleting history past its retention, in bounded chunks (one short transaction each)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.activity import prune_activity_before
from core.models import ClientCommand, Event, Notification, RateLimitCounter

log = logging.getLogger(__name__)

CHUNK = 5000  # rows deleted per statement


def _delete_chunk(session: Session, model, column, cutoff: datetime) -> int:
    ids = select(model.id).where(column < cutoff).limit(CHUNK)
    return session.execute(
        delete(model).where(model.id.in_(ids)).execution_options(synchronize_session=False)
    ).rowcount


def _delete_expired_counters(session: Session, now: datetime) -> int:
    # An expired sign-in counter would only be restarted by its next hit; most never are.
    keys = select(RateLimitCounter.key).where(RateLimitCounter.expires_at <= now).limit(CHUNK)
    return session.execute(
        delete(RateLimitCounter).where(RateLimitCounter.key.in_(keys))
        .execution_options(synchronize_session=False)
    ).rowcount


class PruneHistory:
    """Activity buckets, fleet events, the notification log and final commands (with their
    history) older than
    their retention, and expired sign-in rate-limit counters. True while a full chunk was
    deleted (more may be waiting)."""

    def __init__(self, *, activity_hours: int, event_days: int, command_days: int):
        self.activity = timedelta(hours=activity_hours)
        self.events = timedelta(days=event_days)
        self.commands = timedelta(days=command_days)

    def __call__(self, session: Session, now: datetime) -> bool:
        counts = {
            "activity buckets": prune_activity_before(session, now - self.activity, CHUNK),
            "events": _delete_chunk(session, Event, Event.occurred_at, now - self.events),
            # The notification log is kept as long as the events it tells of.
            "notifications": _delete_chunk(session, Notification, Notification.created_at,
                                           now - self.events),
            # Only final commands have finished_at; open ones are never pruned.
            "commands": _delete_chunk(session, ClientCommand, ClientCommand.finished_at,
                                      now - self.commands),
            "rate-limit counters": _delete_expired_counters(session, now),
        }
        if any(counts.values()):
            log.info("pruned %s", ", ".join(f"{n} {what}" for what, n in counts.items() if n))
        return any(n >= CHUNK for n in counts.values())

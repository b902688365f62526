"""Notification jobs: keep NOTIFY_URLS' channels, plan events into notifications (core.
notify_plan), and send them.

Sending never holds up the scheduler: each message goes out on a small thread pool, and a
step only hands out what is due and writes down what came back. A send that outlives its
timeout counts as a failed attempt; one dead channel delays no other, and failures retry with
backoff until NOTIFY_MAX_ATTEMPTS, then end as `failed`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.models import Notification, NotificationChannel
from core.notify_channels import ChannelError, SecretBox, parse_notify_urls, sync_declared_channels
from core.notify_plan import (
    FAILED,
    PENDING,
    RESOLUTION,
    SENT,
    Policy,
    fold_storms,
    follow_up_alerts,
    plan_events,
    release_quiet_hours,
)
from core.notify_send import send

log = logging.getLogger(__name__)

WORKERS = 4
RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0),
                                 RETRY_MAX_SECONDS))


class SyncDeclaredChannels:
    """Once per process: the channels of NOTIFY_URLS, added, kept or removed."""

    def __init__(self, settings: Settings):
        self.declared = parse_notify_urls(settings.notify_urls)
        self.box = SecretBox.from_settings(settings)
        self.done = False

    def __call__(self, session: Session, now: datetime) -> bool:
        if not self.done:
            added, removed = sync_declared_channels(session, self.box, self.declared, now)
            if added or removed:
                log.info("notification channels from NOTIFY_URLS: %d added, %d removed",
                         added, removed)
            self.done = True
        return False


class PlanNotifications:
    def __init__(self, policy: Policy):
        self.policy = policy

    def __call__(self, session: Session, now: datetime) -> bool:
        if plan_events(session, now, self.policy):
            return True
        follow_up_alerts(session, now, self.policy)
        return False


@dataclass
class _Flight:
    future: Future
    deadline: float


class SendNotifications:
    def __init__(self, policy: Policy, box: SecretBox, timeout: float,
                 pool: ThreadPoolExecutor | None = None):
        self.policy = policy
        self.box = box
        self.timeout = timeout
        self.pool = pool or ThreadPoolExecutor(WORKERS, thread_name_prefix="notify")
        self.flights: dict[int, _Flight] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SendNotifications:
        return cls(Policy.from_settings(settings), SecretBox.from_settings(settings),
                   settings.notify_send_timeout_seconds)

    def __call__(self, session: Session, now: datetime) -> bool:
        self._write_outcomes(session, now)
        release_quiet_hours(session, now, self.policy)
        gathered = fold_storms(session, now, self.policy, busy=self.flights)
        room = WORKERS * 4 - len(self.flights)
        if room <= 0:
            return False
        due = session.scalars(
            select(Notification).where(Notification.state == PENDING,
                                       Notification.next_attempt_at <= now)
            .order_by(Notification.next_attempt_at, Notification.id)
            .limit(room + len(self.flights) + len(gathered))).all()
        if not due:
            return False
        channels = {c.id: c for c in session.scalars(select(NotificationChannel))}
        for row in due:
            if row.id in self.flights or row.id in gathered:
                continue
            if len(self.flights) >= WORKERS * 4:
                break
            channel = channels.get(row.channel_id)
            if channel is None or not channel.enabled:
                row.state, row.error = FAILED, "the channel was removed or disabled"
                continue
            try:
                url = self.box.decrypt(channel.url_encrypted)
            except ChannelError as exc:
                row.state, row.error = FAILED, str(exc)
                continue
            future = self.pool.submit(send, url, row.title, row.body, severity=row.severity,
                                      resolution=row.kind == RESOLUTION, timeout=self.timeout)
            self.flights[row.id] = _Flight(future, time.monotonic() + self.timeout * 2 + 5)
        return False

    def _write_outcomes(self, session: Session, now: datetime) -> None:
        for row_id, flight in list(self.flights.items()):
            if flight.future.done():
                try:
                    error = flight.future.result()
                except Exception as exc:  # noqa: BLE001 - a plugin's own bug is a failure too
                    error = f"{type(exc).__name__}: {exc}"[:500]
            elif time.monotonic() > flight.deadline:
                error = f"no answer within {self.timeout:g} s"
            else:
                continue
            del self.flights[row_id]
            row = session.get(Notification, row_id)
            if row is None:
                continue
            row.attempts += 1
            if error is None:
                row.state, row.sent_at, row.error = SENT, now, None
            elif row.attempts >= self.policy.max_attempts:
                row.state, row.error = FAILED, error
                log.warning("notification %d to %s failed after %d attempts: %s", row.id,
                            row.channel_shown, row.attempts, error)
            else:
                row.error, row.next_attempt_at = error, now + retry_delay(row.attempts)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

"""The listener's screenshot path: `dashboard` and `screenshot` messages, apart from telemetry.

A screenshot is up to SCREENSHOT_MAX_BYTES and takes Pillow some milliseconds to check; in the
telemetry batches it would hold up thousands of heartbeats. So the listener runs a second,
small listener for these two topics in a process of its own, on its own MQTT session (its
client id ends in `-screenshots`) with a small receive window: its work never delays a batch,
and a slow disk delays only screenshots. Each capture is its own transaction, acknowledged to
the broker once committed, as telemetry is (listener.acks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock, utc_now
from core.config import Settings
from core.contract import Rejection
from core.ingest import count_rejections
from core.screenshot_store import ScreenshotStore
from core.screenshots import Capture, parse_screenshot
from listener.batcher import UNSTORABLE, is_transient

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM = 8  # screenshots in flight: each may be megabytes
MAINTENANCE_SECONDS = 300  # how often the disk budget and orphan files are looked at
MAX_BACKOFF = 10.0


class ScreenshotSink:
    """Checks and stores screenshots one at a time, in arrival order (listener.service.Sink)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *,
                 clock: Clock = utc_now):
        self.settings = settings
        self.sessions = session_factory
        self.store = ScreenshotStore.from_settings(settings)
        self.clock = clock
        self.queue: deque[tuple[str, bytes, datetime]] = deque()
        self.arrived = threading.Event()
        self.done = 0  # handled for good, in order: stored, or refused and counted
        self.failures = 0
        self.retry_at = 0.0
        self.maintained_at = 0.0
        self.stored = 0
        self.refused = 0

    # paho's thread
    def accept(self, topic: str, payload: bytes, retained: bool, received_at: Any) -> None:
        self.queue.append((topic, payload, received_at))
        self.arrived.set()

    # the main loop
    def step(self, wait: float) -> bool:
        now = time.monotonic()
        if now >= self.maintained_at + MAINTENANCE_SECONDS:
            self.maintained_at = now
            self._maintain()
        if now < self.retry_at or not self.queue:
            self.arrived.clear()
            if wait > 0:
                self.arrived.wait(min(wait, max(0.0, self.retry_at - now) or wait))
            return False
        topic, payload, received_at = self.queue[0]
        if self._handle(topic, payload, received_at):
            self.queue.popleft()
            self.done += 1
        return bool(self.queue)

    def _handle(self, topic: str, payload: bytes, received_at: datetime) -> bool:
        """True when the message is handled for good; False: the database is away, retry."""
        s = self.settings
        item = parse_screenshot(topic, payload, received_at, prefix=s.mqtt_topic_prefix,
                                max_bytes=s.screenshot_max_bytes,
                                max_pixels=s.screenshot_max_pixels)
        try:
            if isinstance(item, Rejection):
                self._count(item)
            else:
                self._store(item)
        except Exception as exc:  # noqa: BLE001 - no message may stop the listener
            if is_transient(exc):
                self.failures += 1
                delay = min(MAX_BACKOFF, 0.25 * 2 ** min(self.failures - 1, 8))
                self.retry_at = time.monotonic() + delay
                log.warning("database unavailable (%s); screenshot held, retry in %.1f s",
                            type(exc).__name__, delay)
                return False
            log.exception("a screenshot on %s could not be stored", topic)
            self._count(Rejection(UNSTORABLE, topic[:255], str(exc)[:300], ""))
        self.failures = 0
        return True

    def _count(self, rejection: Rejection) -> None:
        self.refused += 1
        log.warning("refused a screenshot on %s: %s (%s)", rejection.topic, rejection.reason,
                    rejection.detail)
        with self.sessions() as session, session.begin():
            count_rejections(session, [rejection], self.clock())

    def _store(self, capture: Capture) -> None:
        shot = None
        try:
            with self.sessions() as session, session.begin():
                shot, removal = self.store.save(session, capture, self.clock())
        except BaseException:
            if shot is not None:
                self.store.discard(shot)  # written, never committed
            raise
        removal.unlink()
        self.stored += 1

    def _maintain(self) -> None:
        try:
            now = self.clock()
            with self.sessions() as session, session.begin():
                removal = self.store.prune_budget(session)
                removal.files += self.store.prune_expired_priority(session, now).files
            removal.unlink()
            with self.sessions() as session, session.begin():
                self.store.reconcile(session, now)
        except Exception as exc:  # noqa: BLE001 - tried again at the next interval
            log.warning("screenshot maintenance failed (%s); it runs again later", exc)

    def failed(self) -> str | None:
        return None

    def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.queue and time.monotonic() < deadline:
            self.step(min(0.2, max(0.0, deadline - time.monotonic())))
        return not self.queue

    def backlog(self) -> int:
        return len(self.queue)

    def committed(self) -> int:
        return self.done

"""Collects parsed device messages and writes them in batches: one transaction per batch.

`put` is called from paho's network thread and never blocks. `step` is called by the main
loop (and by tests, once): it moves queued messages into the pending batch and writes the
batch when it is full or old enough. A batch that fails to commit because the database is
away stays pending and is retried with back-off; nothing accepted is dropped while the
process lives.

Messages are written in the order they were put, so `committed` (how many are handled for
good: stored, or rejected and counted) says which: the first `committed` ones. The listener
acknowledges them to the broker by that count (listener.acks).
"""

from __future__ import annotations

import logging
import queue
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock, utc_now
from core.contract import UNKNOWN_COMMAND, Message, Rejection
from core.ingest import apply_batch, count_rejections
from listener.metrics import ListenerMetrics

log = logging.getLogger(__name__)

UNSTORABLE = "unstorable"  # passed validation, yet the database refused it alone


def is_transient(exc: BaseException) -> bool:
    """The database is away or busy (retry), as opposed to refusing this data."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Batcher:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        batch_size: int = 1000,
        flush_seconds: float = 0.2,
        log_cap: int = 1000,
        clock: Clock = utc_now,
        metrics: ListenerMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        max_backoff: float = 10.0,
    ):
        self.session_factory = session_factory
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.log_cap = log_cap
        self.clock = clock
        self.metrics = metrics or ListenerMetrics()
        self.monotonic = monotonic
        self.max_backoff = max_backoff
        self.queue: queue.SimpleQueue[Message | Rejection] = queue.SimpleQueue()
        self.pending: list[Message | Rejection] = []
        self.pending_since: float | None = None
        self.retry_at = 0.0
        self.failures = 0
        self.committed = 0
        self.stored: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def put(self, item: Message | Rejection) -> None:
        self.queue.put(item)

    def backlog(self) -> int:
        return len(self.pending) + self.queue.qsize()

    def _take(self, wait: float) -> None:
        """Move queued messages into the pending batch, blocking up to `wait` for the first."""
        room = self.batch_size - len(self.pending)
        if room <= 0:
            return
        if wait > 0:
            try:
                self._append(self.queue.get(timeout=wait))
                room -= 1
            except queue.Empty:
                return
        for _ in range(room):
            try:
                self._append(self.queue.get_nowait())
            except queue.Empty:
                break

    def _append(self, item: Message | Rejection) -> None:
        if self.pending_since is None:
            self.pending_since = self.monotonic()
        self.pending.append(item)

    def step(self, wait: float = 0.0, *, force: bool = False) -> bool:
        """One unit of work. Returns True when more is waiting (call again at once).

        `wait`: the longest this call may block, waiting for messages or for a retry; a loop
        passes a fraction of the flush interval, a test passes 0.
        `force`: write what is pending now, whatever its size or age (shutdown, tests).
        """
        if self.pending_since is not None and not force:
            # Never past the flush deadline of what is pending.
            wait = min(wait, max(0.0, self.pending_since + self.flush_seconds - self.monotonic()))
        self._take(wait)
        self.metrics.pending.set(self.backlog())
        if not self.pending:
            return False
        now = self.monotonic()
        if now < self.retry_at:
            if wait > 0:  # the database is away: nothing to do until the retry
                time.sleep(min(wait, self.retry_at - now))
            return False
        full = len(self.pending) >= self.batch_size
        due = self.pending_since is not None and now - self.pending_since >= self.flush_seconds
        if not (full or due or force):
            return False
        if not self._write(self.pending):
            return False
        self.pending = []
        self.pending_since = None
        return not self.queue.empty()

    def _write(self, batch: list[Message | Rejection]) -> bool:
        started = self.monotonic()
        try:
            with self.session_factory() as session, session.begin():
                result = apply_batch(session, batch, now=self.clock(), log_cap=self.log_cap)
        except Exception as exc:  # noqa: BLE001 - no message may stop the listener
            if is_transient(exc):
                return self._schedule_retry(exc, len(batch))
            log.error("a batch of %d was refused (%s); writing it one by one", len(batch), exc)
            return self._write_one_by_one(batch)
        self._record(result.by_kind, batch, result.unknown_commands)
        self.committed += len(batch)
        elapsed = self.monotonic() - started
        self.metrics.batch_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(batch))
        log.debug(
            "batch stored: %d messages, %d rejected, %d new clients, %d events in %.1f ms",
            result.accepted, result.rejected, result.registered, result.events, elapsed * 1000,
        )
        if self.failures:
            log.info("database is back; stored the %d messages held since the outage", len(batch))
            self.failures = 0
        return True

    def _schedule_retry(self, exc: BaseException, size: int) -> bool:
        self.failures += 1
        self.metrics.db_errors.inc()
        delay = min(self.max_backoff, 0.25 * 2 ** min(self.failures - 1, 8))
        self.retry_at = self.monotonic() + delay
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning(
            "database unavailable (%s); holding %d messages, retry %d in %.1f s",
            message[:200], size + self.queue.qsize(), self.failures, delay,
        )
        return False

    def _write_one_by_one(self, batch: list[Message | Rejection]) -> bool:
        for position, item in enumerate(batch):
            try:
                with self.session_factory() as session, session.begin():
                    result = apply_batch(session, [item], now=self.clock(),
                                         log_cap=self.log_cap)
                self._record(result.by_kind, [item], result.unknown_commands)
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    # Keep what is left for the retry; what was written is not written again
                    # (by position: equal messages, such as repeated rejections, are common).
                    self.pending = batch[position:]
                    return self._schedule_retry(exc, len(self.pending))
                self._drop_unstorable(item, exc)
            # Stored, or dropped as unstorable: retrying it could never succeed, and held
            # back unacknowledged it would come again with every restart.
            self.committed += 1
        return True

    def _drop_unstorable(self, item: Any, exc: BaseException) -> None:
        topic = getattr(item, "topic", "")
        log.error("dropping a message the database refuses on %s: %s", topic, exc)
        rejection = Rejection(UNSTORABLE, topic, str(exc)[:300], "")
        try:
            with self.session_factory() as session, session.begin():
                count_rejections(session, [rejection], self.clock())
        except SQLAlchemyError:
            log.exception("could not count the unstorable message")
        self._record(Counter(), [rejection])

    def _record(self, by_kind: Counter[str], batch: list[Message | Rejection],
                unknown_commands: int = 0) -> None:
        for kind, n in by_kind.items():
            self.metrics.stored.labels(kind).inc(n)
        self.stored.update(by_kind)
        reasons = Counter(item.reason for item in batch if isinstance(item, Rejection))
        if unknown_commands:  # found while writing: the ack was valid, its command unknown
            reasons[UNKNOWN_COMMAND] += unknown_commands
        for reason, n in reasons.items():
            self.metrics.rejected.labels(reason).inc(n)
            self.rejected[reason] += n

    def drain(self, timeout: float) -> bool:
        """Write everything queued, retrying a database outage until `timeout` (shutdown)."""
        deadline = self.monotonic() + timeout
        while self.backlog():
            if self.monotonic() >= deadline:
                return False
            self.retry_at = min(self.retry_at, deadline)
            if not self.step(force=True) and self.pending and self.monotonic() < self.retry_at:
                time.sleep(min(0.1, max(0.0, self.retry_at - self.monotonic())))
        return True

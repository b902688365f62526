"""Where a raw device message becomes a parsed one and joins a batch.

The same code runs in the listener's writer process (production) and in-process (tests):
`Intake.handle` parses, logs a refusal once per reason, and hands the result to the batcher.
"""

from __future__ import annotations

import logging
from datetime import datetime

from core.clock import Clock, utc_now
from core.config import Settings
from core.contract import Rejection, parse_message
from core.db import describe_url, make_engine, make_session_factory
from listener.batcher import Batcher
from listener.metrics import ListenerMetrics

log = logging.getLogger(__name__)


def build_batcher(settings: Settings, *, clock: Clock = utc_now) -> Batcher:
    # The driver's own executemany (SQLite) beats SQLAlchemy's multi-row VALUES, whose long
    # SQL is parsed again on every batch; Postgres streams its rows with COPY (core.ingest).
    engine = make_engine(settings.database_url, writer=True, use_insertmanyvalues=False)
    log.info("listener storing to %s", describe_url(settings.database_url))
    return Batcher(
        make_session_factory(engine),
        batch_size=settings.listener_batch_size,
        flush_seconds=settings.listener_flush_ms / 1000,
        log_cap=settings.listener_log_cap_per_client,
        clock=clock,
        metrics=ListenerMetrics(),
    )


class Intake:
    def __init__(self, settings: Settings, batcher: Batcher):
        self.prefix = settings.mqtt_topic_prefix
        self.max_payload_bytes = settings.listener_max_payload_bytes
        self.batcher = batcher
        self.warned: set[str] = set()

    def handle(self, topic: str, payload: bytes, retained: bool, received_at: datetime) -> None:
        self.batcher.metrics.received.inc()
        item = parse_message(
            topic,
            payload,
            received_at,
            prefix=self.prefix,
            max_payload_bytes=self.max_payload_bytes,
            retained=retained,
        )
        if isinstance(item, Rejection):
            self._log_rejection(item)
        self.batcher.put(item)

    def _log_rejection(self, rejection: Rejection) -> None:
        # Once per reason at WARNING, so a misbehaving device cannot flood the log.
        level = logging.DEBUG if rejection.reason in self.warned else logging.WARNING
        self.warned.add(rejection.reason)
        log.log(
            level,
            "rejected a message on %s: %s (%s); payload: %s",
            rejection.topic, rejection.reason, rejection.detail, rejection.excerpt,
        )


class InlineSink:
    """Parse and write in this process (tests, and tools that embed a listener)."""

    def __init__(self, intake: Intake):
        self.intake = intake
        self.batcher = intake.batcher

    def accept(self, topic: str, payload: bytes, retained: bool, received_at: datetime) -> None:
        self.intake.handle(topic, payload, retained, received_at)

    def step(self, wait: float) -> bool:
        return self.batcher.step(wait=wait)

    def failed(self) -> str | None:
        return None

    def drain(self, timeout: float) -> bool:
        return self.batcher.drain(timeout)

    def backlog(self) -> int:
        return self.batcher.backlog()

    def committed(self) -> int:
        return self.batcher.committed

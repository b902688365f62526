"""Prometheus metrics of one listener (own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ListenerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "infoscreen_listener_received_total",
            "Device messages received from the broker",
            registry=self.registry,
        )
        self.stored = Counter(
            "infoscreen_listener_stored_total",
            "Valid device messages committed to the database, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "infoscreen_listener_rejected_total",
            "Device messages refused, by reason (committed to the database as counts)",
            ["reason"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "infoscreen_listener_batch_seconds",
            "Time to write one batch",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.db_errors = Counter(
            "infoscreen_listener_db_errors_total",
            "Batches that failed to commit and were kept for a retry",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "infoscreen_listener_batch_size",
            "Messages written in one batch",
            registry=self.registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.pending = Gauge(
            "infoscreen_listener_pending_messages",
            "Messages received and not yet committed",
            registry=self.registry,
        )

"""Prometheus metrics of the scheduler (own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.job_seconds = Histogram(
            "infoscreen_scheduler_job_seconds", "Time one job took in a cycle, by job",
            ["job"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        self.job_errors = Counter(
            "infoscreen_scheduler_job_errors_total", "Steps of a job that failed, by job",
            ["job"], registry=self.registry)
        self.cycle_seconds = Histogram(
            "infoscreen_scheduler_cycle_seconds", "Time one cycle of every job took",
            registry=self.registry, buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.last_good_cycle = Gauge(
            "infoscreen_scheduler_last_good_cycle_timestamp_seconds",
            "When this scheduler last finished a cycle in which no job failed (Unix time)",
            registry=self.registry)
        self.leader = Gauge(
            "infoscreen_scheduler_leader",
            "1 while this scheduler is the acting one, 0 while it stands by",
            registry=self.registry)

    def cycle(self, timings_ms: dict[str, float], acting: bool, good_at: float | None) -> None:
        self.leader.set(1 if acting else 0)
        for job, ms in timings_ms.items():
            self.job_seconds.labels(job).observe(ms / 1000)
        if timings_ms:
            self.cycle_seconds.observe(sum(timings_ms.values()) / 1000)
        if good_at is not None:
            self.last_good_cycle.set(good_at)

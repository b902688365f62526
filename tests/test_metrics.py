"""Metrics of every process: the scheduler's jobs and cycles, the web server's requests per
route summed over its gunicorn workers, and the fleet's gauges, for a token of any role."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from scheduler.loop import Scheduler
from scheduler.metrics import SchedulerMetrics
from tests.helpers import close_web_app, free_port, make_web_app, tokens, wait_until
from tests.test_listener_process import process_env


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from Prometheus' text format."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name or (wanted and key.startswith(f"{name}{{") and all(
                f'{k}="{v}"' in key for k, v in labels.items())):
            return float(value)
    return None


def test_the_scheduler_counts_jobs_errors_cycles_and_leadership(db):
    metrics = SchedulerMetrics()

    def broken(session, now):
        raise RuntimeError("bad day")

    Scheduler(db.sessions, [("fine", lambda s, n: False), ("broken", broken)],
              metrics=metrics).run_cycle()
    registry = metrics.registry
    assert registry.get_sample_value("infoscreen_scheduler_job_errors_total",
                                     {"job": "broken"}) == 1
    assert registry.get_sample_value("infoscreen_scheduler_job_seconds_count",
                                     {"job": "fine"}) == 1
    assert registry.get_sample_value("infoscreen_scheduler_leader") == 1
    assert registry.get_sample_value(
        "infoscreen_scheduler_last_good_cycle_timestamp_seconds") == 0  # not a good cycle
    Scheduler(db.sessions, [("fine", lambda s, n: False)], metrics=metrics).run_cycle()
    assert registry.get_sample_value(
        "infoscreen_scheduler_last_good_cycle_timestamp_seconds") > 0
    Scheduler(db.sessions, [], metrics=metrics, leader=lambda: False).run_cycle()
    assert registry.get_sample_value("infoscreen_scheduler_leader") == 0


def test_metrics_answer_any_role_with_the_fleet_and_the_requests(db):
    from tests.test_wall import add_screens

    add_screens(db, 3)
    add_screens(db, 1, seen_ago=3600, first=4)
    app = make_web_app(db.url)
    try:
        client = app.test_client()
        auth = tokens(db)
        assert client.get("/metrics").status_code == 401
        client.get("/healthz")
        response = client.get("/metrics", headers=auth["viewer"])
        assert response.status_code == 200 and response.mimetype == "text/plain"
        text = response.get_data(as_text=True)
    finally:
        close_web_app(app)
    assert sample(text, "infoscreen_screens", status="alive") == 3
    assert sample(text, "infoscreen_screens", status="down") == 1
    assert sample(text, "infoscreen_open_alerts") == 0
    assert sample(text, "infoscreen_http_request_seconds_count", route="/healthz",
                  method="GET", status="200") >= 1


def _get(url: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "infoscreen", *command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_requests_are_summed_over_every_gunicorn_worker(db):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = tokens(db)["viewer"]
    proc = _start(["serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
                  {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": db.url,
                   "SECRET_KEY": "k" * 40})
    try:
        def up() -> bool:
            try:
                return "ok" in _get(f"{base}/healthz")
            except OSError:
                return False

        wait_until(up, timeout=30, message="the web server")
        for _ in range(39):
            _get(f"{base}/healthz")
        # Whichever worker answers a scrape, it counts all 40 (the first came from `up`).
        for _ in range(6):
            count = sample(_get(f"{base}/metrics", headers),
                           "infoscreen_http_request_seconds_count", route="/healthz",
                           method="GET", status="200")
            assert count == 40
    finally:
        _stop(proc)


@pytest.mark.broker
def test_the_scheduler_process_serves_its_metrics(db, broker, tmp_path):
    port = free_port()
    env = process_env(broker, db, tmp_path, SCHEDULER_METRICS_ADDRESS=f"127.0.0.1:{port}",
                      SCHEDULER_POLL_SECONDS="0.2")
    proc = _start(["scheduler"], env)
    try:
        def good_cycle() -> bool:
            try:
                text = _get(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return False
            return (sample(text, "infoscreen_scheduler_leader") == 1 and
                    (sample(text, "infoscreen_scheduler_last_good_cycle_timestamp_seconds")
                     or 0) > 0)

        wait_until(good_cycle, timeout=30, message="a good cycle in the scheduler's metrics")
    finally:
        _stop(proc)


def test_the_alert_rules_and_the_dashboard_use_only_metrics_that_exist(db):
    import re
    from pathlib import Path

    import yaml

    from listener.metrics import ListenerMetrics
    from tests.test_wall import add_screens

    root = Path(__file__).resolve().parents[1] / "deploy"
    rules = (root / "prometheus" / "infoscreen-alerts.yml").read_text()
    yaml.safe_load(rules)
    yaml.safe_load((root / "prometheus" / "prometheus.yml").read_text())
    dashboard = (root / "grafana" / "infoscreen-dashboard.json").read_text()
    used = set(re.findall(r"infoscreen_[a-z_]+", rules + dashboard))
    add_screens(db, 1)
    app = make_web_app(db.url)
    try:
        client = app.test_client()
        client.get("/healthz")
        exposed = client.get("/metrics", headers=tokens(db)["viewer"]).get_data(as_text=True)
    finally:
        close_web_app(app)
    from prometheus_client import generate_latest

    scheduler = SchedulerMetrics()
    scheduler.job_errors.labels("x").inc()
    scheduler.job_seconds.labels("x").observe(1)
    listener = ListenerMetrics()
    listener.stored.labels("heartbeat").inc()
    listener.rejected.labels("invalid_json").inc()
    exposed += generate_latest(scheduler.registry).decode()
    exposed += generate_latest(listener.registry).decode()
    known = set(re.findall(r"^(?:# TYPE )?(infoscreen_[a-z_]+)", exposed, re.M))
    assert used and used <= known, used - known

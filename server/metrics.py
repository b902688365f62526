"""The web server's Prometheus metrics at `/metrics` (a token of any role: Prometheus sends
one as `bearer_token`).

Request latency per route is counted in every gunicorn worker; with PROMETHEUS_MULTIPROC_DIR
set (server/gunicorn_conf.py does) each worker writes its samples to files there and a scrape
sums all of them, whichever worker answers. The fleet's gauges (screens by status, open
alerts, commands and notifications by state) are read from the database at each scrape, so
they agree across workers by construction.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import func, select

from core.clock import utc_now
from core.fleet import fleet_overview
from core.models import ClientCommand, Notification
from server.auth import require_role
from server.extensions import current_settings, db

bp = Blueprint("metrics", __name__)
REQUEST_SECONDS = Histogram(
    "infoscreen_http_request_seconds", "Time to answer a request, by route, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            # The route's pattern, not the path: a uuid per screen would be a label per screen.
            route = request.url_rule.rule if request.url_rule else "unmatched"
            REQUEST_SECONDS.labels(route, request.method, str(response.status_code)).observe(
                time.perf_counter() - started)
        return response


def _fleet_registry() -> CollectorRegistry:
    settings = current_settings()
    registry = CollectorRegistry()
    counts = fleet_overview(db.session, utc_now(), settings.heartbeat_stale_seconds,
                            settings.heartbeat_down_seconds)
    screens = Gauge("infoscreen_screens", "Screens by liveness status", ["status"],
                    registry=registry)
    for status in ("alive", "stale", "down"):
        screens.labels(status).set(counts[status])
    Gauge("infoscreen_players_crashed", "Screens whose player process crashed",
          registry=registry).set(counts["processCrashed"])
    Gauge("infoscreen_open_alerts", "Service-failed alerts nobody acknowledged yet",
          registry=registry).set(counts["serviceFailedOpen"])
    for name, help_text, model in (
        ("infoscreen_commands", "Commands by state", ClientCommand),
        ("infoscreen_notifications", "Notifications by state", Notification),
    ):
        gauge = Gauge(name, help_text, ["state"], registry=registry)
        for state, n in db.session.execute(
                select(model.state, func.count()).group_by(model.state)):
            gauge.labels(state).set(n)
    return registry


@bp.get("/metrics")
@require_role("viewer")
def metrics():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        requests = CollectorRegistry()
        multiprocess.MultiProcessCollector(requests)
    else:
        requests = REGISTRY
    body = generate_latest(requests) + generate_latest(_fleet_registry())
    return Response(body, mimetype=CONTENT_TYPE_LATEST)

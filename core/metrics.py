"""Serving a process's Prometheus metrics on METRICS addresses (`host:port`, empty: off)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

from core.config import parse_address

log = logging.getLogger(__name__)


def serve_metrics(registry: CollectorRegistry, address: str, what: str) -> None:
    """Serve on a thread; a taken port is a warning, never the end of the process."""
    parsed = parse_address(address)
    if parsed is None:
        return
    host, port = parsed
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("%s metrics not served on %s: %s", what, address, exc.strerror or exc)
        return
    log.info("%s metrics on http://%s/metrics", what, address)

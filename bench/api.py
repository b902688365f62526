"""API latency benchmark: the staff API under gunicorn with 10,000 clients in Postgres.

    .venv/bin/python bench/api.py [--record]

Seeds a fresh database with --clients clients (health, reconnect figures, some crashed,
some with open alerts), starts `infoscreen serve` on a free loopback port, and sends
--requests requests per endpoint from --concurrency client processes (keep-alive, one
connection each). The reference is /healthz through the same server and database in the
same run; each endpoint's p95 is reported with its ratio to the reference's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, Database, run_facts, web_up  # noqa: E402
from core.clock import utc_now  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.models import Client  # noqa: E402
from core.staff import create_token  # noqa: E402
from tests.helpers import free_port, wait_until  # noqa: E402

ENDPOINTS = {
    "reference /healthz": "/healthz",
    "GET /api/clients (first page)": "/api/clients",
    "GET /api/monitoring/overview": "/api/monitoring/overview",
}


def seed(url: str, clients: int) -> str:
    """Insert the fleet; returns a viewer token."""
    now = utc_now()
    rows = [
        {
            "uuid": f"00000000-0000-4000-8000-{i:012d}",
            "hostname": f"screen-{i:05d}",
            "ip": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "software_version": "2025.3.1",
            "first_seen_at": now - timedelta(days=30),
            "last_seen_at": now - timedelta(seconds=i % 600),
            "last_heartbeat_at": now - timedelta(seconds=i % 600),
            "process_status": "crashed" if i % 97 == 0 else "running",
            "process_status_at": now,
            "health": {"cpu_percent": i % 100, "memory_percent": 40},
            "health_at": now,
            "mqtt_reconnect_count": i % 7,
            "mqtt_last_disconnect_at": now - timedelta(hours=i % 48),
            "service_failed_at": now if i % 211 == 0 else None,
            "service_failed_unit": "infoscreen-player.service" if i % 211 == 0 else None,
            "service_failed_received_at": now if i % 211 == 0 else None,
        }
        for i in range(clients)
    ]
    engine = make_engine(url)
    with make_session_factory(engine)() as session, session.begin():
        session.execute(Client.__table__.insert(), rows)
        token = create_token(session, "bench", "viewer", now=now, actor="bench")
    engine.dispose()
    return token


def client_worker(port: int, path: str, token: str, count: int, queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            queue.put(("error", f"{path}: HTTP {response.status}"))
            return
    conn.close()
    queue.put(("ok", latencies))


def measure(port: int, path: str, token: str, args: argparse.Namespace) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    per_worker = args.requests // args.concurrency
    workers = [context.Process(target=client_worker, args=(port, path, token, per_worker, queue))
               for _ in range(args.concurrency)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    for _ in workers:
        kind, value = queue.get(timeout=600)
        if kind == "error":
            raise RuntimeError(value)
        latencies.extend(value)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {"requests": len(latencies), "per_second": round(len(latencies) / elapsed),
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=800, help="per endpoint")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--postgres-url", help="admin URL of the Postgres server")
    parser.add_argument("--record", action="store_true", help="write bench/results/")
    args = parser.parse_args(argv)
    command = "python bench/api.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    database = Database.create("postgresql", args.postgres_url)
    port = free_port()
    server = None
    try:
        token = seed(database.url, args.clients)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": database.url,
               "SECRET_KEY": os.urandom(24).hex(), "LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(
            [sys.executable, "-m", "infoscreen", "serve", "--bind", f"127.0.0.1:{port}",
             "--workers", str(args.workers)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: web_up(port), timeout=30, message="the web server")
        results = {}
        for name, path in ENDPOINTS.items():
            measure(port, path, token, argparse.Namespace(requests=args.concurrency * 5,
                                                          concurrency=args.concurrency))
            results[name] = measure(port, path, token, args)
            r = results[name]
            print(f"{name:<34} {r['per_second']:>5}/s  p50 {r['p50_ms']:>6} ms  "
                  f"p95 {r['p95_ms']:>6} ms  p99 {r['p99_ms']:>6} ms", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if database.drop:
            database.drop()
    reference = results["reference /healthz"]["p95_ms"]
    summary = {
        **run_facts(command),
        "clients": args.clients, "concurrency": args.concurrency,
        "gunicorn_workers": args.workers, "results": results,
        "p95_ratio_to_reference": {name: round(r["p95_ms"] / reference, 2)
                                   for name, r in results.items()},
    }
    for name, ratio in summary["p95_ratio_to_reference"].items():
        print(f"p95 ratio to the reference, {name}: {ratio}")
    if args.record:
        path = ROOT / "bench" / "results" / f"api-postgresql-{datetime.now(UTC):%Y-%m-%d}.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"recorded in {path.relative_to(ROOT)}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())

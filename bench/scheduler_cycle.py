"""Scheduler cycle benchmark: one full cycle with 100,000 clients and 1,000,000 historic
commands in Postgres.

    .venv/bin/python bench/scheduler_cycle.py [--record]

Seeds a fresh database with --clients clients (most alive, some stale, some down, some
crashed, some with open alerts) and --commands historic commands (mostly final, a few
hundred open), brings it to a steady state (liveness followed, monitor states published),
then runs --cycles cycles of every job the scheduler runs (`scheduler.service.build_jobs`,
auto-recovery on, a real broker for dispatch and the monitor topics). Between cycles it does
what the listener does in 5 s: a sixth of the alive clients send a heartbeat, a few of them
report a crash, a few report running again.

The reference, in the same run and database, is one sequential read of both tables
(`count(*)` of clients and of client_commands): the least that any cycle that looks at the
whole fleet and its commands row by row would pay. The ratio is cycle time over reference.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text, update  # noqa: E402

from bench.harness import ROOT, Database, run_facts, start_broker  # noqa: E402
from core.clock import utc_now  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.models import Client, Event  # noqa: E402
from mqtt_client.publisher import Publisher  # noqa: E402
from scheduler.loop import Scheduler  # noqa: E402
from scheduler.monitoring import SIGNATURE  # noqa: E402
from scheduler.service import build_jobs  # noqa: E402

SEED_CLIENTS = """
INSERT INTO clients (uuid, hostname, ip, software_version, first_seen_at, last_seen_at,
                     last_heartbeat_at, process_status, process_status_at,
                     mqtt_reconnect_count, mqtt_last_disconnect_at, service_failed_at,
                     service_failed_unit)
SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'), 'screen-' || i,
       '10.' || (i / 65536) || '.' || (i / 256 % 256) || '.' || (i % 256), '2025.3.1',
       :now - interval '30 days',
       -- 97% alive, 2% stale, 1% down
       :now - make_interval(secs => CASE WHEN i % 100 < 97 THEN i % 60
                                         WHEN i % 100 < 99 THEN 120 ELSE 900 END),
       :now - make_interval(secs => i % 60),
       CASE WHEN i % 500 = 0 THEN 'crashed' ELSE 'running' END, :now,
       i % 7, :now - make_interval(hours => i % 48),
       CASE WHEN i % 1000 = 0 THEN :now END,
       CASE WHEN i % 1000 = 0 THEN 'infoscreen-player.service' END
FROM generate_series(1, :clients) AS i
"""

SEED_COMMANDS = """
INSERT INTO client_commands (id, client_uuid, action, state, reason, requested_by, forced,
                             issued_at, expires_at, completion_seconds, sent_at, accepted_at,
                             completed_at, finished_at)
SELECT md5(i::text)::uuid::text,
       '00000000-0000-4000-8000-' || lpad((i % :clients + 1)::text, 12, '0'),
       (ARRAY['restart_app', 'reboot_host', 'shutdown_host'])[i % 3 + 1],
       CASE WHEN i % 2000 = 0 THEN 'sent' WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END,
       'benchmark history', 'staff', false,
       t, t + interval '5 minutes', 120, t, t, t + interval '30 seconds',
       CASE WHEN i % 2000 = 0 THEN NULL ELSE t + interval '30 seconds' END
FROM (SELECT i, CASE WHEN i % 2000 = 0 THEN :now - interval '1 minute'
                     ELSE :now - make_interval(mins => i % (60 * 24 * 90) + 10) END AS t
      FROM generate_series(1, :commands) AS i) AS s
"""

# What the listener does between two cycles of 5 s: a sixth of the alive clients send a
# heartbeat (every 30 s each), a few of them report a crash, a few report running again.
TRAFFIC = """
UPDATE clients SET last_seen_at = :now, last_heartbeat_at = :now,
       process_status = CASE WHEN right(uuid, 12)::bigint % 5000 = :crash THEN 'crashed'
                             WHEN right(uuid, 12)::bigint % 5000 = :heal THEN 'running'
                             ELSE process_status END
WHERE right(uuid, 12)::bigint % 6 = :slice AND right(uuid, 12)::bigint % 100 < 97
"""


FRESH = """
UPDATE clients SET last_seen_at = :now - make_interval(secs => right(uuid, 12)::int % 30),
                   last_heartbeat_at = :now - make_interval(secs => right(uuid, 12)::int % 30)
WHERE right(uuid, 12)::bigint % 100 < 97
"""


def seed(url: str, clients: int, commands: int) -> None:
    engine = make_engine(url)
    now = utc_now()
    with engine.begin() as conn:
        started = time.perf_counter()
        conn.execute(text(SEED_CLIENTS), {"now": now, "clients": clients})
        conn.execute(text(SEED_COMMANDS), {"now": now, "clients": clients, "commands": commands})
        print(f"seeded {clients:,} clients and {commands:,} commands in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def reference(engine) -> float:
    with engine.connect() as conn:
        started = time.perf_counter()
        conn.execute(text("SELECT count(*) FROM clients")).scalar()
        conn.execute(text("SELECT count(*) FROM client_commands")).scalar()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--postgres-admin-url", help="default: the local socket")
    parser.add_argument("--record", action="store_true", help="write bench/results/")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "bench/scheduler_cycle.py", *(argv or sys.argv[1:])])

    broker = start_broker()
    database = Database.create("postgresql", args.postgres_admin_url)
    publisher = None
    try:
        seed(database.url, args.clients, args.commands)
        settings = Settings.model_validate({
            "DATABASE_URL": database.url, "MQTT_HOST": broker.host, "MQTT_PORT": broker.port,
            "MQTT_USER": broker.server.username, "MQTT_PASSWORD": broker.server.password,
            "CRASH_RECOVERY_ENABLED": True, "CRASH_RECOVERY_MAX_PER_MINUTE": 20,
        })
        engine = make_engine(database.url, writer=True)
        sessions = make_session_factory(engine)
        publisher = Publisher.start(settings, "bench-scheduler")
        publisher.wait_connected(10)
        scheduler = Scheduler(sessions, build_jobs(settings, publisher, sessions))
        # Steady state: the alive clients heard from within the last 30 s, liveness known,
        # every client's monitor state and every event published once.
        with engine.begin() as conn:
            conn.execute(text(FRESH), {"now": utc_now()})
        for name, job in scheduler.jobs:
            if name in ("follow_liveness", "detect_crashes"):
                while scheduler.step(name, job):
                    pass
        with engine.begin() as conn:
            conn.execute(update(Client).values(monitor_signature=SIGNATURE))
            conn.execute(update(Event).values(delivered_at=utc_now()))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE clients"))

        cycles, references = [], []
        per_job: dict[str, list[float]] = {}
        for n in range(args.cycles):
            with engine.begin() as conn:
                conn.execute(text(TRAFFIC), {"now": utc_now(), "slice": n % 6,
                                             "crash": 7 * n % 5000, "heal": 7 * (n - 3) % 5000})
            references.append(reference(engine))
            started = time.perf_counter()
            jobs = scheduler.run_cycle()
            cycles.append(time.perf_counter() - started)
            for name, ms in jobs.items():
                per_job.setdefault(name, []).append(ms)
            slowest = ", ".join(f"{k} {v:.0f}" for k, v in sorted(
                jobs.items(), key=lambda kv: -kv[1])[:3])
            print(f"cycle {n + 1}: {cycles[-1] * 1000:.0f} ms (reference "
                  f"{references[-1] * 1000:.0f} ms; slowest jobs, ms: {slowest})", flush=True)
        with engine.connect() as conn:
            issued = conn.execute(text(
                "SELECT count(*) FROM client_commands WHERE requested_by = 'auto-recovery'"
            )).scalar()
    finally:
        if publisher is not None:
            publisher.stop()
        if database.drop:
            database.drop()
        broker.remove()

    summary = {
        **run_facts(command),
        "clients": args.clients, "historic_commands": args.commands, "cycles": args.cycles,
        "cycle_ms": {"p50": round(statistics.median(cycles) * 1000, 1),
                     "max": round(max(cycles) * 1000, 1)},
        "job_ms_p50": {name: round(statistics.median(v), 1) for name, v in per_job.items()},
        "reference_ms": {"p50": round(statistics.median(references) * 1000, 1)},
        "ratio_p50_to_reference": round(statistics.median(cycles) / statistics.median(references),
                                        2),
        "auto_recovery_commands_issued": issued,
    }
    print(json.dumps(summary, indent=2))
    if args.record:
        path = ROOT / "bench" / "results" / (
            f"scheduler-cycle-postgresql-{datetime.now(UTC):%Y-%m-%d}.json")
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"recorded in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

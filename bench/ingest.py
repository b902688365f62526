"""Ingest benchmark: how many heartbeats per second the listener stores with no loss, and how
long a message takes from publish to commit, against a reference pipeline in the same run.

    .venv/bin/python bench/ingest.py                 # Postgres (the local server), full run
    .venv/bin/python bench/ingest.py --record        # ...and write bench/results/
    .venv/bin/python bench/ingest.py --database sqlite --rates 1000,2000 --step-seconds 5

For each pipeline (the reference first, then the listener) and each target rate, the
raw-socket load generator publishes heartbeats for 10,000 client ids at QoS 1 for
--step-seconds. The pipeline *kept up* when every message was committed (no loss) and the
backlog was written within --drain-grace seconds after the last publish. The highest rate
sustained is the highest rate actually offered (the generator may fall short of the target
when the machine is saturated) that the pipeline kept up with. Latency is measured
by probes: 20 heartbeats a second for dedicated client ids, published on their own
connection into the same stream; a poller sees each commit in the database (every 5 ms).

With --mix deployed the stream is what a fleet of deployed Infoscreen 2025 clients sends: per
screen a health report every 5 s (their shape: expected_state, actual_state, health_metrics,
broker_connection, no top-level timestamp) and a heartbeat every 30 s, so six health reports
to one heartbeat; the report converts the rate into screens (one screen is 0.233 messages/s).
The deployed clients publish health at QoS 0; here it is QoS 1 like everything else, because
"no loss" can only be checked against the broker's PUBACKs, and QoS 1 is the harder case.

With --tls the comparison is the listener over TLS against the same listener over plain TCP,
both in the same run with the same steps: first against the plain broker, then against a
second throwaway broker with a TLS listener only (the listener verifies it against our CA,
the load generator and the probes speak TLS too). The reference pipeline is not run: it
has no TLS, and the figure of interest is TLS / plain (the issue's budget: at least 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    ROOT,
    Database,
    Pipeline,
    load_tls,
    pipelines,
    run_facts,
    start_broker,
    start_tls_broker,
)
from simulator.loadgen import client_ids, run_load  # noqa: E402
from tests.brokers import TestBroker  # noqa: E402
from tests.helpers import wait_until  # noqa: E402

PROBE_RATE = 20
POLL_SECONDS = 0.005
RATES = "2000,5000,7500,10000,12500,15000,17500,20000"
# Finer steps where the plain listener saturates (12,000-14,000/s here), so that the ratio
# TLS / plain is not decided by the step size alone.
TLS_RATES = "2000,5000,8000,10000,11000,12000,13000,14000,16000"
TLS_BUDGET = 0.8
# Messages per kind per screen of each mix, and what one screen sends per second.
MIXES = {
    "heartbeat": (("heartbeat",), None),
    "deployed": (("health-2025",) * 6 + ("heartbeat",), 1 / 5 + 1 / 30),
}


@dataclass
class Step:
    rate: int
    achieved: float
    sent: int
    stored: int
    lost: int
    drain_seconds: float
    p50_ms: float | None
    p99_ms: float | None
    probes: int
    sustained: bool  # no loss, and everything offered was stored within the drain grace


@dataclass
class PipelineResult:
    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def max_sustained(self) -> int:
        """The highest rate actually offered that the pipeline kept up with, losing nothing."""
        return max((s.achieved for s in self.steps if s.sustained), default=0)

    def at(self, rate: int) -> Step | None:
        return next((s for s in self.steps if s.rate == rate), None)


class Probes:
    """Publishes probe heartbeats and watches the database for their commits."""

    def __init__(self, broker: TestBroker, database_url: str, prefix: str = "infoscreen"):
        self.ids = client_ids(200, "probe")
        self.prefix = prefix
        # Over TLS when the broker is a TlsTestBroker (its client() speaks TLS).
        self.client = broker.client(broker.simulator, f"bench-probe-{os.getpid()}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.query = _poller(database_url)
        self.lock = threading.Lock()
        self.outstanding: dict[str, float] = {}
        self.seen: dict[str, object] = {}
        self.latencies: list[float] = []
        self.missed = 0
        self.published = 0

    def prime(self, timeout: float = 30) -> None:
        """Register the probe ids, so that steps measure updates, like the load. Also proves
        the pipeline is subscribed: what it missed before is published again."""
        deadline = time.monotonic() + timeout
        while (missing := set(self.ids) - set(self.query(self.ids))) and (
                time.monotonic() < deadline):
            for probe in missing:
                self.client.publish(f"{self.prefix}/{probe}/heartbeat", b"{}", qos=1)
            try:
                wait_until(lambda: len(self.query(self.ids)) == len(self.ids), 2, message="probes")
            except AssertionError:  # some were published before the pipeline subscribed
                continue
        if missing:
            raise TimeoutError(f"{len(missing)} probe ids not stored within {timeout} s")
        self.seen = self.query(self.ids)

    def run(self, stop: threading.Event) -> None:
        poller = threading.Thread(target=self._poll, args=(stop,), daemon=True)
        poller.start()
        index = 0
        next_at = time.monotonic()
        while not stop.is_set():
            probe = self.ids[index % len(self.ids)]
            index += 1
            with self.lock:
                if probe in self.outstanding:
                    self.missed += 1  # not committed within a whole cycle of probe ids
                self.outstanding[probe] = time.monotonic()
                self.published += 1
            payload = json.dumps({"timestamp": datetime.now(UTC).isoformat()}).encode()
            self.client.publish(f"{self.prefix}/{probe}/heartbeat", payload, qos=1)
            next_at += 1 / PROBE_RATE
            stop.wait(max(0.0, next_at - time.monotonic()))
        poller.join()

    def _poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._check()
            time.sleep(POLL_SECONDS)
        deadline = time.monotonic() + 10  # the last probes may still be on their way
        while self.outstanding and time.monotonic() < deadline:
            self._check()
            time.sleep(POLL_SECONDS)

    def _check(self) -> None:
        with self.lock:
            waiting = list(self.outstanding)
        if not waiting:
            return
        for probe, value in self.query(waiting).items():
            if value != self.seen.get(probe):
                with self.lock:
                    started = self.outstanding.pop(probe, None)
                self.seen[probe] = value
                if started is not None:
                    self.latencies.append(time.monotonic() - started)

    def take(self) -> tuple[list[float], int]:
        with self.lock:
            latencies, missed = self.latencies, self.missed + len(self.outstanding)
            self.latencies, self.missed, self.outstanding = [], 0, {}
        return latencies, missed

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _poller(url: str):
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database, isolation_level=None, check_same_thread=False)
        placeholder = "?"
    else:
        conn = psycopg.connect(
            dbname=parsed.database, user=parsed.username, password=parsed.password,
            host=parsed.host or parsed.query.get("host"), port=parsed.port, autocommit=True)
        placeholder = "%s"

    def query(ids: list[str]) -> dict[str, object]:
        marks = ", ".join([placeholder] * len(ids))
        rows = conn.execute(
            f"SELECT uuid, last_heartbeat_at FROM clients WHERE uuid IN ({marks})",  # noqa: S608
            ids).fetchall()
        return dict(rows)

    return query


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_for_drain(pipeline: Pipeline, probes: Probes, before: float, expected: int,
                   ended: float, timeout: float) -> tuple[float, int]:
    """Wait until the step's `expected` messages are stored (at most `timeout` s; what is
    still missing then counts as lost). Returns (seconds from `ended` to drained, stored)."""
    probes.published = 0
    try:
        wait_until(lambda: pipeline.stored() - before >= expected, timeout, message="drain")
    except AssertionError:
        pass
    return time.monotonic() - ended, int(pipeline.stored() - before)


def run_step(pipeline: Pipeline, broker: TestBroker, probes: Probes, ids: list[str], rate: int,
             args: argparse.Namespace) -> Step:
    before = pipeline.stored()
    stop = threading.Event()
    prober = threading.Thread(target=probes.run, args=(stop,), daemon=True)
    prober.start()
    load = run_load(broker.host, broker.port, broker.simulator.username,
                    broker.simulator.password, prefix="infoscreen", client_ids=ids, rate=rate,
                    duration=args.step_seconds, qos=1, connections=args.connections,
                    kinds=MIXES[args.mix][0], tls=load_tls(broker))
    ended = time.monotonic()
    stop.set()
    prober.join()
    expected = load.acked + probes.published
    drain, stored = wait_for_drain(pipeline, probes, before, expected, ended, args.drain_timeout)
    latencies, missed = probes.take()
    lost = max(0, expected - stored)
    p99 = None if missed else percentile(latencies, 0.99)
    # Judged on the load actually offered: near saturation the broker slows its PUBACKs and
    # the generator falls short of the target; that shortfall is reported, not hidden.
    sustained = lost == 0 and missed == 0 and drain <= args.drain_grace
    return Step(
        rate=rate, achieved=round(load.achieved_rate), sent=expected, stored=stored, lost=lost,
        drain_seconds=round(drain, 2),
        p50_ms=round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        p99_ms=round(p99 * 1000, 1) if p99 is not None else None,
        probes=len(latencies), sustained=sustained,
    )


def bench_pipeline(name: str, pipeline: Pipeline, broker: TestBroker, database: Database,
                   args: argparse.Namespace) -> PipelineResult:
    database.reset()
    pipeline.start()
    probes = Probes(broker, database.url)
    result = PipelineResult(name)
    try:
        probes.prime()
        ids = client_ids(args.clients, "bench")
        # Register every client id first: the steps then measure steady-state updates.
        run_load(broker.host, broker.port, broker.simulator.username,
                 broker.simulator.password, prefix="infoscreen", client_ids=ids, rate=5000,
                 duration=max(2.0, 1.5 * args.clients / 5000), qos=1,
                 connections=args.connections, tls=load_tls(broker))
        wait_until(lambda: _total(database.url) >= args.clients, 60, message="clients registered")
        for rate in args.rates:
            step = run_step(pipeline, broker, probes, ids, rate, args)
            result.steps.append(step)
            print(f"  {name:<12} target {rate:>6}/s  offered {step.achieved:>6}/s  lost "
                  f"{step.lost:>6}  drain {step.drain_seconds:>5.2f} s  p50 {step.p50_ms} ms  "
                  f"p99 {step.p99_ms} ms  {'kept up' if step.sustained else 'fell behind'}",
                  flush=True)
            if not step.sustained and args.stop_at_first_failure:
                break
    finally:
        probes.close()
        errors = pipeline.stop()
        if "Traceback" in errors:
            print(errors[-3000:], file=sys.stderr)
    return result


def _total(url: str) -> int:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(parsed.database) as conn:
            return conn.execute("SELECT count(*) FROM clients").fetchone()[0]
    with psycopg.connect(dbname=parsed.database, user=parsed.username, password=parsed.password,
                         host=parsed.host or parsed.query.get("host"), port=parsed.port) as conn:
        return conn.execute("SELECT count(*) FROM clients").fetchone()[0]


def report(results: dict[str, PipelineResult], args: argparse.Namespace, command: str) -> dict:
    reference, listener = results["reference"], results["listener"]
    ratio = listener.max_sustained / reference.max_sustained if reference.max_sustained else None
    at_5000 = listener.at(5000)
    per_screen = MIXES[args.mix][1]
    summary = {
        **run_facts(command),
        "database": args.database,
        "mix": args.mix,
        "clients": args.clients,
        "step_seconds": args.step_seconds,
        "listener_max_sustained_per_s": listener.max_sustained,
        "reference_max_sustained_per_s": reference.max_sustained,
        "ratio": round(ratio, 2) if ratio is not None else None,
        "listener_p99_ms_at_5000": at_5000.p99_ms if at_5000 else None,
        "listener_p50_ms_at_5000": at_5000.p50_ms if at_5000 else None,
        "steps": {name: [asdict(s) for s in r.steps] for name, r in results.items()},
    }
    print()
    print(f"listener:  highest rate sustained with no loss {listener.max_sustained}/s")
    print(f"reference: highest rate sustained with no loss {reference.max_sustained}/s")
    print(f"ratio listener/reference: {summary['ratio']}")
    if per_screen:
        summary["per_screen_per_s"] = round(per_screen, 3)
        summary["listener_screens_at_max"] = int(listener.max_sustained / per_screen)
        summary["reference_screens_at_max"] = int(reference.max_sustained / per_screen)
        print(f"deployed screens (health every 5 s, heartbeat every 30 s) the listener carries: "
              f"{summary['listener_screens_at_max']:,}")
    if at_5000:
        print(f"listener at 5000/s: p50 {at_5000.p50_ms} ms, p99 {at_5000.p99_ms} ms "
              "(publish to commit)")
    return summary


def report_tls(results: dict[str, PipelineResult], args: argparse.Namespace,
               command: str) -> dict:
    plain, tls = results["listener"], results["listener-tls"]
    ratio = tls.max_sustained / plain.max_sustained if plain.max_sustained else None
    plain_5000, tls_5000 = plain.at(5000), tls.at(5000)
    summary = {
        **run_facts(command),
        "database": args.database,
        "clients": args.clients,
        "step_seconds": args.step_seconds,
        "tls": True,
        "listener_max_sustained_per_s": plain.max_sustained,
        "listener_tls_max_sustained_per_s": tls.max_sustained,
        "ratio_tls_plain": round(ratio, 2) if ratio is not None else None,
        "budget": TLS_BUDGET,
        "budget_met": ratio is not None and ratio >= TLS_BUDGET,
        "listener_p50_ms_at_5000": plain_5000.p50_ms if plain_5000 else None,
        "listener_p99_ms_at_5000": plain_5000.p99_ms if plain_5000 else None,
        "listener_tls_p50_ms_at_5000": tls_5000.p50_ms if tls_5000 else None,
        "listener_tls_p99_ms_at_5000": tls_5000.p99_ms if tls_5000 else None,
        "steps": {name: [asdict(s) for s in r.steps] for name, r in results.items()},
    }
    print()
    print(f"listener, plain TCP: highest rate sustained with no loss {plain.max_sustained}/s")
    print(f"listener, TLS:       highest rate sustained with no loss {tls.max_sustained}/s")
    print(f"ratio TLS/plain: {summary['ratio_tls_plain']} (budget >= {TLS_BUDGET}: "
          f"{'met' if summary['budget_met'] else 'MISSED'})")
    for label, step in (("plain", plain_5000), ("TLS", tls_5000)):
        if step:
            print(f"listener ({label}) at 5000/s: p50 {step.p50_ms} ms, p99 {step.p99_ms} ms "
                  "(publish to commit)")
    return summary


def record(summary: dict) -> Path:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    kind = "ingest-tls" if summary.get("tls") else "ingest"
    if summary.get("mix", "heartbeat") != "heartbeat":
        kind += f"-{summary['mix']}"
    path = ROOT / "bench" / "results" / f"{kind}-{summary['database']}-{stamp}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--postgres-url", help="admin URL of the Postgres server "
                        "(default: TEST_POSTGRES_URL or the local socket); a database is made "
                        "and dropped there")
    parser.add_argument("--rates", help=f"comma-separated messages per second, in order "
                        f"(default {RATES}; with --tls {TLS_RATES})")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=10_000, help="distinct client ids")
    parser.add_argument("--connections", type=int, default=4, help="publisher connections")
    parser.add_argument("--drain-grace", type=float, default=1.0,
                        help="seconds after the last publish within which all must be stored")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds to wait for stragglers before counting them lost")
    parser.add_argument("--keep-going", dest="stop_at_first_failure", action="store_false",
                        help="run every rate even after one was not sustained")
    parser.add_argument("--only", choices=("listener", "reference"),
                        help="measure one pipeline only (no ratio)")
    parser.add_argument("--mix", choices=tuple(MIXES), default="heartbeat",
                        help="heartbeat: heartbeats only; deployed: the deployed clients' mix, "
                        "six health reports (their shape) to one heartbeat")
    parser.add_argument("--tls", action="store_true",
                        help="measure the listener over plain TCP and over TLS in the same run "
                        "(two brokers) and report TLS / plain; the reference is not run")
    parser.add_argument("--record", action="store_true", help="write bench/results/ "
                        "(ingest-<database>-<date>.json; with --tls ingest-tls-..., with "
                        "--mix deployed ingest-deployed-...)")
    args = parser.parse_args(argv)
    if args.tls and args.only:
        parser.error("--tls measures the listener twice (plain and TLS); drop --only")
    args.rates = [int(r) for r in (args.rates or (TLS_RATES if args.tls else RATES)).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/ingest.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.tls:
        return main_tls(args, command)
    broker = start_broker()
    database = Database.create(args.database, args.postgres_url)
    try:
        results = {}
        for name, pipeline in pipelines(broker, database).items():
            if args.only and name != args.only:
                results[name] = PipelineResult(name)
                continue
            print(f"{name}:", flush=True)
            results[name] = bench_pipeline(name, pipeline, broker, database, args)
        summary = report(results, args, command)
        if args.record:
            print(f"recorded in {record(summary).relative_to(ROOT)}")
    finally:
        if database.drop:
            database.drop()
        broker.remove()
    return 0


def main_tls(args: argparse.Namespace, command: str) -> int:
    """The listener against the plain broker, then against the TLS one: same steps, same
    database, same machine, one run."""
    brokers = {"listener": start_broker(), "listener-tls": start_tls_broker()}
    database = Database.create(args.database, args.postgres_url)
    try:
        results = {}
        for name, broker in brokers.items():
            print(f"{name}:", flush=True)
            pipeline = pipelines(broker, database)["listener"]
            results[name] = bench_pipeline(name, pipeline, broker, database, args)
        summary = report_tls(results, args, command)
        if args.record:
            print(f"recorded in {record(summary).relative_to(ROOT)}")
    finally:
        if database.drop:
            database.drop()
        for broker in brokers.values():
            broker.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

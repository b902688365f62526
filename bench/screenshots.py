"""Screenshot benchmark: does a fleet's screenshots slow down telemetry, and how long does a
screenshot take from publish to stored?

    .venv/bin/python bench/screenshots.py --record      # Postgres (the local server)
    .venv/bin/python bench/screenshots.py --database sqlite --step-seconds 10 --rounds 1

The listener runs as production runs it (`python -m infoscreen listener`: paho, the writer
process and the screenshot process beside it), against a throwaway broker and a fresh
database, with SCREENSHOT_DIR in a temporary folder. The load:

- Telemetry: the raw-socket load generator publishes heartbeats for 10,000 client ids at QoS 1
  (--telemetry-rate, 5,000/s by default). Probe heartbeats for 200 dedicated ids (20/s) travel
  in the same stream and a poller sees each committed in the database: publish to commit, as
  in bench/ingest.py.
- Screenshots: --screens screens each send a dashboard (schema v2, the JPEG in base64) every
  --interval seconds, evenly spread: 1,000 screens a minute is 16.7/s. The screens are the
  first of the telemetry ids (a screen sends both). A handful of distinct 1280x720 JPEGs of
  about --screenshot-kb are rendered once; each message has its own uuid and capture time.
  They are published at QoS 1 by a process of their own, so that the benchmark's own work does
  not delay the telemetry probes.

Steps of --step-seconds each with the same telemetry load: without screenshots and with them,
--rounds times, in the order without-with, with-without, ... (a drift of the machine's speed
during the run then weighs on both alike). Reported:

1. telemetry p99 publish to commit with screenshots / without (all rounds pooled); budget 1.25;
2. screenshot publish to stored p95; budget 1 s. The publish time goes into the dashboard's
   `metadata.capture.captured_at`, and the publisher's process polls the `screenshots` table
   every 20 ms: a capture is *stored* when its committed row is seen (its files are written
   before the row is committed), so the figure includes the poll interval, an upper bound.
   `received_at - captured_at` (the listener's receipt, before checking and writing) is
   reported beside it, to show where the time goes;
3. losses: every screenshot the broker acknowledged is stored or counted as refused, and the
   telemetry step kept up (nothing lost, the backlog written within 1 s of the last publish).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    ROOT,
    Database,
    Pipeline,
    pipelines,
    run_facts,
    start_broker,
)
from bench.ingest import (  # noqa: E402
    PROBE_RATE,
    Probes,
    _total,
    percentile,
    wait_for_drain,
)
from simulator.loadgen import LoadError, client_ids, run_load  # noqa: E402
from tests.brokers import TestBroker  # noqa: E402
from tests.helpers import wait_until  # noqa: E402

PREFIX = "infoscreen"
RATIO_BUDGET = 1.25  # telemetry p99 with screenshots / without
STORED_P95_BUDGET = 1.0  # seconds, screenshot publish to stored
SHOT_POLL_SECONDS = 0.02
# A probe counted as missed was not committed within a cycle over the probe ids (200 ids at
# 20/s): its latency is at least this, which bounds a p99 from below.
MISSED_PROBE_SECONDS = 200 / PROBE_RATE
DISTINCT_PICTURES = 8
WARM_UP_SECONDS = 3.0
SETTLE_SECONDS = 2.0  # between steps
# Placeholders in the pre-encoded dashboards, replaced per message.
UUID_HOLE = "00000000-0000-4000-8000-0000000b1e55"
TIME_HOLE = datetime(2000, 1, 1, tzinfo=UTC)


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


# Pictures and payloads ---------------------------------------------------------------------


def render_pictures(target_kb: float, count: int = DISTINCT_PICTURES) -> list[bytes]:
    """`count` distinct 1280x720 JPEGs (the simulator's screens, one per playlist event), each
    at the JPEG quality that brings it closest to `target_kb`."""
    from simulator.screen import PLAYLIST, render_screenshot

    now = datetime.now(UTC)
    pictures = []
    for index in range(count):
        event = PLAYLIST[index % len(PLAYLIST)]
        hostname = f"bench-screen-{index}"
        best = min((render_screenshot(hostname, now, event, quality=quality)
                    for quality in range(60, 97, 3)),
                   key=lambda jpeg: abs(len(jpeg) - target_kb * 1000))
        pictures.append(best)
    return pictures


def dashboard_template(jpeg: bytes, index: int) -> str:
    """A dashboard (schema v2) with UUID_HOLE and TIME_HOLE where each message's own go."""
    from simulator.screen import PLAYLIST, dashboard_payload

    event = PLAYLIST[index % len(PLAYLIST)]
    document = dashboard_payload(
        UUID_HOLE, jpeg, captured_at=TIME_HOLE, hostname=f"bench-screen-{index}",
        ip="10.20.0.1", uptime_s=3600.0, event_id=event.event_id, event_type=event.event_type,
        process_pid=4242)
    return json.dumps(document, separators=(",", ":"))


# The screenshot publisher, a process of its own ---------------------------------------------


@dataclass(frozen=True)
class ShotPlan:
    host: str
    port: int
    username: str
    password: str
    database_url: str
    screens: tuple[str, ...]
    rate: float  # screenshots per second, all screens
    pictures: tuple[bytes, ...]
    drain_timeout: float


@dataclass
class ShotRun:
    """What one publishing run of the screenshot process saw."""

    published: int = 0
    acked: int = 0
    puback_failed: int = 0
    stored: int = 0
    refused: int = 0  # counted in ingest_rejections during the run (all paths)
    unaccounted: int = 0  # acknowledged by the broker, neither stored nor refused in time
    seconds: float = 0.0
    achieved_rate: float = 0.0
    stored_latencies: list[float] = field(default_factory=list)  # publish -> row seen, s
    receipt_latencies: list[float] = field(default_factory=list)  # received_at - captured_at
    drain_seconds: float = 0.0  # last publish -> the last capture stored
    poll_gap_max: float = 0.0  # the longest time between two polls of the table, s


class ShotPublisher:
    def __init__(self, plan: ShotPlan):
        from sqlalchemy import bindparam, select, text

        from core.db import make_engine
        from core.models import Screenshot
        from mqtt_client import make_client

        self.plan = plan
        self.templates = [dashboard_template(jpeg, k) for k, jpeg in enumerate(plan.pictures)]
        self.cursor = 0  # next screen
        self.connected = threading.Event()
        self.acked: set[int] = set()
        self.failed: set[int] = set()
        self.client = make_client(f"bench-screens-{os.getpid()}", username=plan.username,
                                  password=plan.password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.engine = make_engine(plan.database_url).execution_options(
            isolation_level="AUTOCOMMIT")
        table = Screenshot.__table__
        self.rows_query = select(table.c.id, table.c.client_uuid, table.c.captured_at,
                                 table.c.received_at).where(
            table.c.id > bindparam("after")).order_by(table.c.id)
        self.refused_query = text("SELECT coalesce(sum(count), 0) FROM ingest_rejections")
        with self.engine.connect() as conn:
            self.last_id = conn.execute(text("SELECT coalesce(max(id), 0) FROM screenshots")
                                        ).scalar_one()
        try:
            self.client.connect(plan.host, plan.port, keepalive=30)
        except OSError as exc:
            raise BenchError(f"screenshot publisher: broker {plan.host}:{plan.port}: {exc}"
                             ) from None
        self.client.loop_start()
        if not self.connected.wait(15):
            raise BenchError("screenshot publisher: the broker did not accept the login")

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any,
                    _properties: Any) -> None:
        if not reason_code.is_failure:
            self.connected.set()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason_code: Any,
                    _properties: Any) -> None:
        (self.failed if reason_code.is_failure else self.acked).add(mid)

    def publish_one(self) -> tuple[int, str, str]:
        """One dashboard for the next screen, captured now: (mid, uuid, captured_at)."""
        from core.clock import iso_z

        screen = self.plan.screens[self.cursor % len(self.plan.screens)]
        template = self.templates[self.cursor % len(self.templates)]
        self.cursor += 1
        now = datetime.now(UTC)
        stamp = iso_z(now)
        payload = (template.replace(UUID_HOLE, screen).replace(iso_z(TIME_HOLE), stamp)
                   .replace(f"{TIME_HOLE:%Y%m%d_%H%M%S}", f"{now:%Y%m%d_%H%M%S}"))
        info = self.client.publish(f"{PREFIX}/{screen}/dashboard", payload.encode(), qos=1)
        return info.mid, screen, stamp

    def new_rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(self.rows_query, {"after": self.last_id}).all()
        if rows:
            # One screenshot process, one transaction at a time: ids commit in order.
            self.last_id = rows[-1].id
        return rows

    def refused_total(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(self.refused_query).scalar_one())

    def prime(self, timeout: float) -> bool:
        """Publish until a capture is stored: the screenshot listener is subscribed."""
        from core.clock import iso_z

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, screen, stamp = self.publish_one()
            until = time.monotonic() + 2
            while time.monotonic() < until:
                if any(row.client_uuid == screen and iso_z(row.captured_at) == stamp
                       for row in self.new_rows()):
                    return True
                time.sleep(0.05)
        return False

    def run(self, stop: Any) -> ShotRun:
        """Publish at the plan's rate until `stop`, then wait for every capture to be stored."""
        from core.clock import iso_z

        result = ShotRun()
        refused_before = self.refused_total()
        self.acked.clear()
        self.failed.clear()
        pending: dict[tuple[str, str], float] = {}  # (uuid, captured_at) -> published
        mids: list[int] = []
        lock = threading.Lock()
        last_stored = [0.0]
        polling = threading.Event()
        polling.set()

        def poll() -> None:
            polled = time.monotonic()
            while polling.is_set():
                rows = self.new_rows()
                seen = time.monotonic()
                # The poller's own delays are part of the figure: the longest gap is reported.
                result.poll_gap_max = round(max(result.poll_gap_max, seen - polled), 3)
                polled = seen
                for row in rows:
                    key = (row.client_uuid, iso_z(row.captured_at))
                    with lock:
                        published = pending.pop(key, None)
                    if published is None:
                        continue  # not of this run
                    result.stored_latencies.append(seen - published)
                    result.receipt_latencies.append(
                        (row.received_at - datetime.fromisoformat(key[1])).total_seconds())
                    last_stored[0] = seen
                time.sleep(SHOT_POLL_SECONDS)

        poller = threading.Thread(target=poll, name="screenshot-poller", daemon=True)
        poller.start()
        start = time.monotonic()
        k = 0
        while not stop.is_set():
            due = start + k / self.plan.rate
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            with lock:
                published = time.monotonic()
                mid, screen, stamp = self.publish_one()
                pending[(screen, stamp)] = published
            mids.append(mid)
            k += 1
        ended = time.monotonic()
        result.published = k
        result.seconds = round(ended - start, 3)
        result.achieved_rate = round(k / result.seconds, 2) if result.seconds else 0.0

        def settled() -> bool:
            if any(m not in self.acked and m not in self.failed for m in mids):
                return False  # PUBACKs still due
            acked = sum(1 for m in mids if m in self.acked)
            refused = self.refused_total() - refused_before
            return len(result.stored_latencies) + refused >= acked

        deadline = ended + self.plan.drain_timeout
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.1)
        polling.clear()
        poller.join()
        result.acked = sum(1 for m in mids if m in self.acked)
        result.puback_failed = sum(1 for m in mids if m in self.failed)
        result.stored = len(result.stored_latencies)
        result.refused = self.refused_total() - refused_before
        result.unaccounted = max(0, result.acked - result.stored - result.refused)
        result.drain_seconds = round(max(0.0, last_stored[0] - ended), 3)
        return result

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.engine.dispose()


def shot_process(plan: ShotPlan, commands: Any, reports: Any, stop: Any) -> None:
    """The screenshot publisher's process: ("prime", timeout), ("run", None), ("quit", None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        publisher = ShotPublisher(plan)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops
        reports.put(("error", str(exc) if isinstance(exc, BenchError)
                     else traceback.format_exc()))
        return
    reports.put(("ready", None))
    try:
        while True:
            command, argument = commands.get()
            if command == "quit":
                break
            if command == "prime":
                reports.put(("primed", publisher.prime(argument)))
            elif command == "run":
                reports.put(("running", None))
                reports.put(("done", asdict(publisher.run(stop))))
    except Exception:  # noqa: BLE001 - reported to the parent, which stops
        reports.put(("error", traceback.format_exc()))
    finally:
        publisher.close()


class ShotWorker:
    """The parent's handle on the screenshot process."""

    def __init__(self, plan: ShotPlan):
        ctx = mp.get_context("spawn")
        self.commands, self.reports, self.stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.process = ctx.Process(target=shot_process, name="bench-screenshots",
                                   args=(plan, self.commands, self.reports, self.stop))
        self.process.start()
        self._expect("ready", 60)

    def _expect(self, status: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got, detail = self.reports.get(timeout=0.2)
            except queue.Empty:
                if not self.process.is_alive():
                    raise BenchError(f"the screenshot publisher died (exit code "
                                     f"{self.process.exitcode})") from None
                continue
            if got == "error":
                raise BenchError(f"screenshot publisher: {detail}")
            if got == status:
                return detail
        raise BenchError(f"the screenshot publisher did not report {status!r} in {timeout} s")

    def prime(self, timeout: float = 30) -> None:
        self.commands.put(("prime", timeout))
        if not self._expect("primed", timeout + 10):
            raise BenchError(f"no screenshot was stored within {timeout} s: is the listener's "
                             "screenshot process running and subscribed?")

    def start(self) -> None:
        self.stop.clear()
        self.commands.put(("run", None))
        self._expect("running", 30)

    def stop_publishing(self) -> None:
        self.stop.set()

    def result(self, timeout: float) -> ShotRun:
        """Once every capture is stored or counted (or the drain timeout has passed)."""
        return ShotRun(**self._expect("done", timeout))

    def finish(self, timeout: float) -> ShotRun:
        self.stop_publishing()
        return self.result(timeout)

    def close(self) -> None:
        if self.process.is_alive():
            self.stop.set()
            self.commands.put(("quit", None))
            self.process.join(15)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


# Machine figures -----------------------------------------------------------------------------


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each root process with its descendants, and of every `postgres`
    process on the machine (the server is shared: other databases' work counts too). Linux
    /proc; zeros elsewhere."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    postgres = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        parents[int(entry.name)] = int(rest[1])
        times[int(entry.name)] = (int(rest[11]) + int(rest[12])) / tick
        if stat[stat.find("(") + 1:stat.rfind(")")] == "postgres":
            postgres += times[int(entry.name)]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    totals = {}
    for name, root in roots.items():
        tree, frontier = {root}, [root]
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        totals[name] = sum(times.get(pid, 0.0) for pid in tree)
    totals["postgres"] = postgres
    return totals


def other_pytest_runs() -> int:
    """Processes of other pytest runs on this machine: the figures share the CPU with them."""
    count = 0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            count += b"pytest" in cmdline
    return count


def remove_sqlite_folder(database: Database) -> None:
    """The folder Database.create made for a SQLite file (tempfile, `bench-db-...`), and
    nothing else: any other URL, or a path that is not such a folder, is left alone."""
    url = make_url(database.url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return
    folder = Path(url.database).parent
    if (folder.is_absolute() and folder.name.startswith("bench-db-")
            and folder.parent == Path(tempfile.gettempdir())):
        shutil.rmtree(folder, ignore_errors=True)


# Steps -----------------------------------------------------------------------------------------


@dataclass
class Step:
    round: int
    screenshots: bool
    telemetry_target: int
    telemetry_offered: float
    telemetry_sent: int
    telemetry_stored: int
    telemetry_lost: int
    telemetry_drain_seconds: float
    telemetry_kept_up: bool
    probes: int
    probes_missed: int
    p50_ms: float | None
    p99_ms: float | None  # None when probes were missed
    p99_at_least_ms: float | None  # with missed probes counted as MISSED_PROBE_SECONDS
    machine_cpu_busy: float  # share of all cores busy during the step
    # Cores used: the listener (all its processes), the broker, Postgres (the whole server),
    # the telemetry load generator, the screenshot publisher.
    cpu_cores: dict[str, float]
    shots: dict[str, Any] | None = None
    shot_run: ShotRun | None = field(default=None, repr=False)
    latencies: list[float] = field(default_factory=list, repr=False)


def run_step(round_no: int, with_shots: bool, pipeline: Pipeline, broker: TestBroker,
             probes: Probes, worker: ShotWorker, ids: list[str],
             args: argparse.Namespace) -> Step:
    before = pipeline.stored()
    busy_before, total_before = machine_busy()
    roots = {"listener": pipeline.process.pid, "broker": broker.process.pid,
             "screenshot_publisher": worker.process.pid}
    cpu_before, clock_before = cpu_seconds(roots), time.monotonic()
    if with_shots:
        worker.start()
    stop = threading.Event()
    prober = threading.Thread(target=probes.run, args=(stop,), daemon=True)
    prober.start()
    try:
        load = run_load(broker.host, broker.port, broker.simulator.username,
                        broker.simulator.password, prefix=PREFIX, client_ids=ids,
                        rate=args.telemetry_rate, duration=args.step_seconds, qos=1,
                        connections=args.connections, kinds=("heartbeat",))
    finally:
        ended = time.monotonic()
        if with_shots:
            worker.stop_publishing()
        busy_after, total_after = machine_busy()
        cpu_after, clock_after = cpu_seconds(roots), time.monotonic()
        stop.set()
        prober.join()
    expected = load.acked + probes.published
    drain, stored = wait_for_drain(pipeline, probes, before, expected, ended, args.drain_timeout)
    shots = worker.result(args.drain_timeout + 30) if with_shots else None
    latencies, missed = probes.take()
    lost = max(0, expected - stored)
    p99 = None if missed else percentile(latencies, 0.99)
    return Step(
        round=round_no, screenshots=with_shots, telemetry_target=args.telemetry_rate,
        telemetry_offered=round(load.achieved_rate), telemetry_sent=expected,
        telemetry_stored=stored, telemetry_lost=lost,
        telemetry_drain_seconds=round(drain, 2),
        telemetry_kept_up=lost == 0 and missed == 0 and drain <= args.drain_grace,
        probes=len(latencies), probes_missed=missed,
        p50_ms=_ms(percentile(latencies, 0.5)), p99_ms=_ms(p99),
        p99_at_least_ms=_ms(percentile(latencies + [MISSED_PROBE_SECONDS] * missed, 0.99)),
        machine_cpu_busy=round((busy_after - busy_before) / (total_after - total_before), 2)
        if total_after > total_before else 0.0,
        cpu_cores={**{name: round((cpu_after[name] - cpu_before[name])
                                  / (clock_after - clock_before), 2) for name in cpu_after},
                   "load_generator": round(load.cpu_seconds / load.elapsed, 2)
                   if load.elapsed else 0.0},
        shots=_shot_summary(shots) if shots else None, shot_run=shots, latencies=latencies,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _shot_summary(run: ShotRun) -> dict[str, Any]:
    stored = run.stored_latencies + [math.inf] * run.unaccounted
    return {
        "published": run.published, "acked": run.acked, "puback_failed": run.puback_failed,
        "stored": run.stored, "refused": run.refused, "lost": run.unaccounted,
        "rate_per_s": run.achieved_rate,
        "stored_p50_ms": _finite_ms(percentile(stored, 0.5)),
        "stored_p95_ms": _finite_ms(percentile(stored, 0.95)),
        "stored_max_ms": _finite_ms(max(stored, default=None)),
        "receipt_p50_ms": _finite_ms(percentile(run.receipt_latencies, 0.5)),
        "receipt_p95_ms": _finite_ms(percentile(run.receipt_latencies, 0.95)),
        "drain_seconds": run.drain_seconds,
        "poll_gap_max_ms": _ms(run.poll_gap_max),
    }


def _finite_ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else _ms(seconds)


def print_step(step: Step) -> None:
    kind = "with screenshots   " if step.screenshots else "without screenshots"
    print(f"  round {step.round} {kind} telemetry offered {step.telemetry_offered:>6}/s  "
          f"lost {step.telemetry_lost}  drain {step.telemetry_drain_seconds:.2f} s  "
          f"p50 {step.p50_ms} ms  p99 "
          f"{step.p99_ms if step.p99_ms else f'>= {step.p99_at_least_ms}'} ms  "
          f"{'kept up' if step.telemetry_kept_up else 'FELL BEHIND'}  "
          f"(machine CPU busy {step.machine_cpu_busy:.0%}; cores: " + ", ".join(
              f"{name} {cores}" for name, cores in step.cpu_cores.items()) + ")",
          flush=True)
    if step.shots:
        s = step.shots
        print(f"      screenshots {s['published']} published ({s['rate_per_s']}/s), "
              f"{s['stored']} stored, {s['refused']} refused, {s['lost']} lost; publish to "
              f"stored p50 {s['stored_p50_ms']} ms, p95 {s['stored_p95_ms']} ms, max "
              f"{s['stored_max_ms']} ms; receipt p95 {s['receipt_p95_ms']} ms", flush=True)


# The run -----------------------------------------------------------------------------------------


def schedule(rounds: int) -> list[tuple[int, bool]]:
    """without-with, with-without, ...: (round, with screenshots)."""
    order = []
    for r in range(1, rounds + 1):
        pair = (False, True) if r % 2 else (True, False)
        order += [(r, shots) for shots in pair]
    return order


def report(steps: list[Step], args: argparse.Namespace, command: str,
           pictures: list[bytes], context: dict[str, Any]) -> dict[str, Any]:
    without = [s for s in steps if not s.screenshots]
    with_ = [s for s in steps if s.screenshots]
    pooled = {}
    for name, group in (("without", without), ("with", with_)):
        latencies = [x for s in group for x in s.latencies]
        missed = sum(s.probes_missed for s in group)
        pooled[name] = {
            "probes": len(latencies), "probes_missed": missed,
            "p50_ms": _ms(percentile(latencies, 0.5)),
            "p99_ms": None if missed else _ms(percentile(latencies, 0.99)),
            "p99_at_least_ms": _ms(percentile(latencies + [MISSED_PROBE_SECONDS] * missed,
                                              0.99)),
        }
    p99_without, p99_with = pooled["without"]["p99_ms"], pooled["with"]["p99_ms"]
    ratio = round(p99_with / p99_without, 2) if p99_with and p99_without else None
    # With probes missed in the steps with screenshots, their p99 is only bounded from below.
    bound_with = pooled["with"]["p99_at_least_ms"]
    ratio_at_least = (round(bound_with / p99_without, 2)
                      if ratio is None and bound_with and p99_without else None)
    runs = [s.shot_run for s in with_ if s.shot_run]
    all_stored = [x for r in runs for x in r.stored_latencies]
    unaccounted = sum(r.unaccounted for r in runs)
    stored_for_percentile = all_stored + [math.inf] * unaccounted
    receipts = [x for r in runs for x in r.receipt_latencies]
    p95 = percentile(stored_for_percentile, 0.95)
    kept_up = all(s.telemetry_kept_up for s in steps)
    per_round = []
    for r in sorted({s.round for s in steps}):
        a = next((s for s in without if s.round == r), None)
        b = next((s for s in with_ if s.round == r), None)
        if a and b and a.p99_ms and b.p99_at_least_ms:
            bound = "" if b.p99_ms else ">= "
            per_round.append(f"{bound}{b.p99_at_least_ms / a.p99_ms:.2f}")
    summary = {
        **run_facts(command),
        **context,
        "database": args.database,
        "screens": args.screens,
        "interval_s": args.interval,
        "screenshot_rate_per_s": round(args.screens / args.interval, 2),
        "picture_bytes": sorted(len(p) for p in pictures),
        "telemetry_rate_per_s": args.telemetry_rate,
        "telemetry_clients": args.clients,
        "step_seconds": args.step_seconds,
        "rounds": args.rounds,
        "telemetry": pooled,
        "telemetry_p99_ratio_with_without": ratio,
        "telemetry_p99_ratio_at_least": ratio_at_least,
        "telemetry_p99_ratio_per_round": per_round,
        "ratio_budget": RATIO_BUDGET,
        "ratio_budget_met": ratio is not None and ratio <= RATIO_BUDGET,
        "telemetry_kept_up": kept_up,
        "telemetry_lost": sum(s.telemetry_lost for s in steps),
        "screenshots": {
            "published": sum(r.published for r in runs),
            "acked": sum(r.acked for r in runs),
            "puback_failed": sum(r.puback_failed for r in runs),
            "stored": sum(r.stored for r in runs),
            "refused": sum(r.refused for r in runs),
            "lost": unaccounted,
            "stored_p50_ms": _finite_ms(percentile(stored_for_percentile, 0.5)),
            "stored_p95_ms": _finite_ms(p95),
            "stored_p99_ms": _finite_ms(percentile(stored_for_percentile, 0.99)),
            "stored_max_ms": _finite_ms(max(stored_for_percentile, default=None)),
            "receipt_p50_ms": _finite_ms(percentile(receipts, 0.5)),
            "receipt_p95_ms": _finite_ms(percentile(receipts, 0.95)),
        },
        "stored_p95_budget_ms": STORED_P95_BUDGET * 1000,
        "stored_p95_budget_met": p95 is not None and p95 <= STORED_P95_BUDGET,
        "no_screenshot_lost": unaccounted == 0 and bool(runs),
        "steps": [{k: v for k, v in asdict(s).items() if k not in ("latencies", "shot_run")}
                  for s in steps],
    }
    shots = summary["screenshots"]
    print()
    shown_with = p99_with if p99_with else f">= {bound_with} (probes missed)"
    shown_ratio = ratio if ratio is not None else f">= {ratio_at_least}"
    print(f"telemetry at {args.telemetry_rate}/s, p99 publish to commit: without screenshots "
          f"{p99_without} ms, with {shown_with} ms; ratio {shown_ratio} (budget <= "
          f"{RATIO_BUDGET}: "
          f"{'met' if summary['ratio_budget_met'] else 'MISSED'}; per round {per_round})")
    print(f"telemetry kept up in every step, nothing lost: {'yes' if kept_up else 'NO'}")
    print(f"screenshots ({summary['screenshot_rate_per_s']}/s, {min(summary['picture_bytes'])}-"
          f"{max(summary['picture_bytes'])} bytes): {shots['published']} published, "
          f"{shots['stored']} stored, {shots['refused']} refused, {shots['lost']} lost")
    print(f"screenshot publish to stored: p50 {shots['stored_p50_ms']} ms, p95 "
          f"{shots['stored_p95_ms']} ms (budget <= {STORED_P95_BUDGET * 1000:.0f} ms: "
          f"{'met' if summary['stored_p95_budget_met'] else 'MISSED'}), max "
          f"{shots['stored_max_ms']} ms; publish to the listener's receipt p95 "
          f"{shots['receipt_p95_ms']} ms")
    return summary


def record(summary: dict[str, Any]) -> Path:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    path = ROOT / "bench" / "results" / f"screenshots-{summary['database']}-{stamp}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screens", type=int, default=1000,
                        help="screens sending screenshots (default 1000); they are the first "
                        "of the telemetry client ids")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds between two screenshots of one screen (default 60); "
                        "screens / interval is the screenshot rate, spread evenly")
    parser.add_argument("--screenshot-kb", type=float, default=150.0,
                        help="about how large each JPEG is (default 150)")
    parser.add_argument("--telemetry-rate", type=int, default=5000,
                        help="heartbeats per second in every step, QoS 1 (default 5000)")
    parser.add_argument("--clients", type=int, default=10_000,
                        help="distinct telemetry client ids (default 10000)")
    parser.add_argument("--connections", type=int, default=4,
                        help="telemetry publisher connections, a process each (default 4)")
    parser.add_argument("--step-seconds", type=float, default=25.0,
                        help="length of each step, with and without screenshots (default 25)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="pairs of steps: without-with, then with-without, ... (default 2)")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql",
                        help="where the listener writes (default postgresql: a fresh database "
                        "on the local server, dropped afterwards)")
    parser.add_argument("--postgres-url", help="admin URL of the Postgres server "
                        "(default: TEST_POSTGRES_URL or the local socket)")
    parser.add_argument("--drain-grace", type=float, default=1.0,
                        help="a telemetry step kept up when its backlog was written within "
                        "this many seconds of the last publish (default 1)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to wait for stragglers (telemetry or screenshots) before "
                        "counting them lost (default 60)")
    parser.add_argument("--record", action="store_true",
                        help="write bench/results/screenshots-<database>-<date>.json")
    args = parser.parse_args(argv)
    problems = []
    if args.screens < 1:
        problems.append("--screens must be at least 1")
    if args.interval <= 0:
        problems.append("--interval must be positive")
    if args.telemetry_rate < 1:
        problems.append("--telemetry-rate must be at least 1")
    if args.step_seconds < 2:
        problems.append("--step-seconds must be at least 2")
    if args.rounds < 1:
        problems.append("--rounds must be at least 1")
    if not 1 <= args.connections <= args.clients:
        problems.append("--connections must be between 1 and --clients")
    if not 5 <= args.screenshot_kb <= 1500:
        problems.append("--screenshot-kb must be between 5 and 1500")
    if problems:
        parser.error("; ".join(problems))
    return args


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/screenshots.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C: everything is cleaned up
    context = {"other_pytest_processes_at_start": other_pytest_runs(),
               "load_average_at_start": round(os.getloadavg()[0], 2)}
    if context["other_pytest_processes_at_start"]:
        print(f"note: {context['other_pytest_processes_at_start']} pytest processes are "
              "running on this machine; the figures share its CPU with them", flush=True)
    print("rendering the pictures...", flush=True)
    pictures = render_pictures(args.screenshot_kb)
    broker = database = pipeline = probes = worker = None
    shot_dir = Path(tempfile.mkdtemp(prefix="bench-screenshots-"))
    try:
        try:
            broker = start_broker()
        except AssertionError as exc:
            raise BenchError(f"could not start Mosquitto: {exc}") from None
        try:
            database = Database.create(args.database, args.postgres_url)
        except Exception as exc:  # noqa: BLE001 - any driver error: say what to do
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise BenchError(f"could not create the benchmark database ({type(exc).__name__}: "
                             f"{first}); is Postgres running (scripts/bootstrap.sh --tests)? "
                             "Or pass --postgres-url, or --database sqlite") from None
        pipeline = pipelines(broker, database)["listener"]
        pipeline.env["SCREENSHOT_DIR"] = str(shot_dir)
        try:
            pipeline.start()
        except AssertionError:
            raise BenchError("the listener did not start (no metrics within 20 s)") from None
        probes = Probes(broker, database.url)
        probes.prime()
        ids = client_ids(args.clients, "bench")
        print(f"registering {args.clients} telemetry clients...", flush=True)
        run_load(broker.host, broker.port, broker.simulator.username,
                 broker.simulator.password, prefix=PREFIX, client_ids=ids, rate=5000,
                 duration=max(2.0, 1.5 * args.clients / 5000), qos=1,
                 connections=args.connections)
        wait_until(lambda: _total(database.url) >= args.clients, 60,
                   message="the telemetry clients to be registered")
        plan = ShotPlan(broker.host, broker.port, broker.simulator.username,
                        broker.simulator.password, database.url,
                        tuple(client_ids(args.screens, "bench")),
                        args.screens / args.interval, tuple(pictures), args.drain_timeout)
        worker = ShotWorker(plan)
        worker.prime()
        worker.start()  # a few unmeasured seconds: the screenshot path's first captures
        time.sleep(WARM_UP_SECONDS)
        warm = worker.finish(args.drain_timeout + 30)
        print(f"screenshot warm-up: {warm.stored} of {warm.published} stored", flush=True)
        steps = []
        for round_no, with_shots in schedule(args.rounds):
            time.sleep(SETTLE_SECONDS)
            step = run_step(round_no, with_shots, pipeline, broker, probes, worker, ids, args)
            steps.append(step)
            print_step(step)
        summary = report(steps, args, command, pictures, context)
        if args.record:
            print(f"recorded in {record(summary).relative_to(ROOT)}")
        return 0
    except (BenchError, LoadError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; stopping what the benchmark started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if worker:
            worker.close()
        if probes:
            probes.close()
        if pipeline and pipeline.process:
            errors = pipeline.stop()
            if "Traceback" in errors:
                print(errors[-3000:], file=sys.stderr)
        if database and database.drop:
            database.drop()
        if database:
            remove_sqlite_folder(database)
        if broker:
            broker.remove()
        shutil.rmtree(shot_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

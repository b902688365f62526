"""Command benchmark: 1,000 simulated screens, 1,000 restart_app commands issued at once.

    .venv/bin/python bench/commands.py [--record]

Runs the real processes against a throwaway broker and a fresh Postgres database:
`infoscreen listener`, `infoscreen serve` (gunicorn, --workers, a free loopback port) and
`infoscreen simulate` with --screens devices, each logged in with its own broker account and
answering commands at --speed (restart_app completes a few milliseconds after it arrives).
Once every screen is registered in the database, and after a warm-up that makes every web
worker open its publishing connection:

1. Reference "at once", same run: one bare paho client logged in as the server account
   (TCP_NODELAY on its socket, see `run_reference`) publishes a v1 restart_app to every
   screen at once (QoS 1, fresh command ids the backend does not know: the listener counts
   their acks as unknown), receives the acks itself, and times each command from its
   publish to the screen's `completed`. Same broker, screens and listener; only the
   backend's own path (HTTP, database, PUBACK bookkeeping) is missing.
2. The system: one `POST /api/clients/<uuid>/restart_app` per screen, all released at once
   from --concurrency client processes (keep-alive), then a wait until every command is
   `completed` in the database. Per command, from its row: creation to completion
   (`completed_at - issued_at`; completed_at is when the listener received the ack) and API
   accept to PUBACK (`sent_at - issued_at`).
3. Reference "paced like the API": the API cannot take 1,000 requests in an instant, so its
   commands reach the broker over a few seconds, while the reference at once measures a
   burst that queues at the broker and the screens. This one publishes the same way as the
   first, but on the system's own schedule (each screen's command at its issued_at offset):
   the like-for-like floor for the system's per-command latency.

Budgets (the issue): every command completed, creation to completion p99 <= 1 s; dispatch
(API accept to PUBACK) p50 <= 30 ms. The ratios are the system's completion p99 over each
reference's. Every process, the database and the broker are removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from bench.harness import ROOT, Database, run_facts, start_broker, web_up  # noqa: E402
from core.clock import utc_now  # noqa: E402
from core.commands import command_payload  # noqa: E402
from core.config import Settings  # noqa: E402
from core.contract import UNKNOWN_COMMAND, device_topic  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.models import Client, ClientCommand, IngestRejection  # noqa: E402
from core.staff import create_token  # noqa: E402
from simulator.credentials import provision  # noqa: E402
from tests.brokers import Login, TestBroker  # noqa: E402
from tests.helpers import free_port, wait_until  # noqa: E402

PREFIX = "infoscreen"
REASON = "bench/commands.py"  # the measured commands; the warm-up's have another reason
WARM_UP_REASON = "bench/commands.py warm-up"
EXPIRY_SECONDS = 300  # COMMAND_EXPIRY_SECONDS' default, also for the reference's commands
ACKS_PER_COMMAND = 6  # accepted, execution_started, completed; each on commands/ack and command/ack
WEB_PUBLISHER = re.compile(r" as infoscreen-web-(\d+)-")  # the broker's log of a web worker
LOG_TAIL = 3000  # characters of each process's log shown when the run fails
COMPLETION_BUDGET_MS = 1000.0  # p99, creation to completion
DISPATCH_BUDGET_MS = 30.0  # p50, API accept to PUBACK


# The processes ---------------------------------------------------------------------------


class Stack:
    """The pipeline's processes, each in its own process group with its log in `workdir`."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir, self.env = workdir, env
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *argv: str, **extra_env: str) -> None:
        with open(self.workdir / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "infoscreen", *argv], cwd=self.workdir,
                env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"`infoscreen {name}` exited with code {process.returncode}")

    def stop(self) -> None:
        """SIGTERM to every process group, newest first; SIGKILL what is left after 40 s
        (the simulator's workers have 30 s to say offline for their screens)."""
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def log_tails(self) -> str:
        tails = []
        for name in self.processes:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
            tails.append(f"--- infoscreen {name} (last {LOG_TAIL} characters) ---\n"
                         f"{text[-LOG_TAIL:]}")
        return "\n".join(tails)


def provision_screens(broker: TestBroker, credentials: Path, count: int) -> list[str]:
    """What `infoscreen simulate --provision` does: the credentials file, one device account
    per screen in the broker's directory and a reload of the running broker (SIGHUP through
    its pid file). Returns the screens' uuids once the broker takes their logins."""
    settings = Settings.model_validate({"BROKER_DIR": str(broker.directory),
                                        "MQTT_TOPIC_PREFIX": PREFIX})
    devices = provision(settings, credentials, count)
    last = Login(*devices[-1])
    wait_until(lambda: _logs_in(broker, last), timeout=20, interval=0.2,
               message="the broker to take the new device logins")
    return [u for u, _ in devices]


def _logs_in(broker: TestBroker, login: Login) -> bool:
    client = broker.client(login, f"bench-probe-{uuid.uuid4().hex[:8]}")
    connected = threading.Event()
    client.on_connect = lambda c, u, f, reason, p: reason.is_failure or connected.set()
    try:
        client.connect(broker.host, broker.port_for(login), keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        return connected.wait(2)
    finally:
        client.disconnect()
        client.loop_stop()



def web_publishers(broker: TestBroker) -> int:
    """How many web workers have opened their publishing connection (the broker logs it)."""
    return len(set(WEB_PUBLISHER.findall(broker.log_text())))


# The reference ---------------------------------------------------------------------------


def run_reference(broker: TestBroker, screens: list[str], timeout: float,
                  offsets: list[float] | None = None) -> dict:
    """A bare paho client as the server account: every screen gets a restart_app, at once or,
    with `offsets` (seconds, one per screen, ascending), on that schedule; each command is
    timed from its publish to the `completed` ack the client receives."""
    now = utc_now()
    messages = []
    for screen in screens:
        command = ClientCommand(
            id=str(uuid.uuid4()), client_uuid=screen, action="restart_app", reason=REASON,
            requested_by="bench-reference", issued_at=now,
            expires_at=now + timedelta(seconds=EXPIRY_SECONDS))
        payload = json.dumps(command_payload(command), separators=(",", ":")).encode()
        messages.append((command.id, device_topic(PREFIX, screen, "commands"), payload))
    published: dict[str, float] = {}
    accepted: dict[str, float] = {}
    completed: dict[str, float] = {}
    subscribed, all_completed = threading.Event(), threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        # One socket publishes the commands and answers every ack with a PUBACK: with Nagle's
        # algorithm, a command waits behind an unacknowledged PUBACK for the broker's delayed
        # TCP ACK (20-30 ms at this pace). The backend's publisher only publishes.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(f"{PREFIX}/+/commands/ack", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        subscribed.set()

    def on_message(client, userdata, message) -> None:
        at = time.monotonic()
        try:
            body = json.loads(message.payload)
            command_id = body["command_id"]
            status = body["status"]
            if command_id not in published:
                return
        except (ValueError, KeyError, TypeError):
            return
        if status == "accepted":
            accepted.setdefault(command_id, at)
        if status != "completed":
            return
        completed.setdefault(command_id, at)
        if len(completed) == len(messages):
            all_completed.set()

    client = broker.client(broker.server, f"bench-reference-{uuid.uuid4().hex[:6]}")
    client.on_connect, client.on_subscribe, client.on_message = (
        on_connect, on_subscribe, on_message)
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = EXPIRY_SECONDS
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("the reference client did not get its SUBACK within 10 s")
        started = time.monotonic()
        for n, (command_id, topic, payload) in enumerate(messages):
            if offsets is not None:
                time.sleep(max(0.0, started + offsets[n] - time.monotonic()))
            published[command_id] = time.monotonic()
            client.publish(topic, payload, qos=1, properties=properties)
        handed_over = time.monotonic() - started
        if not all_completed.wait(timeout):
            raise RuntimeError(
                f"reference: {len(completed)} of {len(messages)} commands completed within "
                f"{timeout:g} s")
        wall = max(completed.values()) - started
    finally:
        client.disconnect()
        client.loop_stop()
    return {"commands": len(published), "publish_loop_ms": round(handed_over * 1000, 1),
            "all_completed_after_ms": round(wall * 1000, 1),
            "completion_ms": spread([completed[c] - published[c] for c in published],
                                    0.5, 0.99, 1.0),
            "accepted_ms": spread([accepted[c] - published[c] for c in accepted], 0.5, 0.99)}


def unknown_acks(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.coalesce(func.sum(IngestRejection.count), 0))
                              .where(IngestRejection.reason == UNKNOWN_COMMAND)) or 0


# The system ------------------------------------------------------------------------------


def issue_worker(port: int, token: str, screens: list[str], reason: str, go, queue) -> None:
    """One client process: one POST per screen, once `go` is set, on a keep-alive connection
    (gunicorn's sync workers close it after every answer; http.client then opens another)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"reason": reason}).encode()
    answers = []
    queue.put(("ready", None))
    go.wait()
    for screen in screens:
        started = time.monotonic()
        try:
            conn.request("POST", f"/api/clients/{screen}/restart_app", body=body,
                         headers=headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            status, data = 0, f"{type(exc).__name__}: {exc}".encode()
        detail = "" if status == 202 else data[:200].decode(errors="replace")
        answers.append((screen, status, started, time.monotonic(), detail))
    conn.close()
    queue.put(("done", answers))


def issue_all(port: int, token: str, screens: list[str], concurrency: int,
              reason: str) -> tuple[list[tuple], float]:
    """Every screen's POST, from `concurrency` processes released together. Returns the
    answers and the time the processes were released (time.monotonic())."""
    context = multiprocessing.get_context("spawn")
    queue, go = context.Queue(), context.Event()
    workers = [
        context.Process(target=issue_worker,
                        args=(port, token, screens[n::concurrency], reason, go, queue))
        for n in range(concurrency)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        queue.get(timeout=60)  # ready
    released = time.monotonic()
    go.set()
    answers: list[tuple] = []
    for _ in workers:
        answers.extend(queue.get(timeout=600)[1])
    for worker in workers:
        worker.join()
    return answers, released


def states(sessions, reason: str) -> Counter:
    with sessions() as session:
        return Counter(dict(session.execute(
            select(ClientCommand.state, func.count()).where(ClientCommand.reason == reason)
            .group_by(ClientCommand.state)).all()))


def warm_up(sessions, port: int, token: str, broker: TestBroker, workers: int) -> int:
    """A web worker connects to the broker on its first command: warm every worker up with
    commands for clients that are not screens (nobody reads their topic; the broker still
    answers PUBACK), like the other benchmarks' warm-up requests. Returns the commands."""
    issued = 0
    for _ in range(8):
        if web_publishers(broker) >= workers:
            break
        extra = [str(uuid.uuid4()) for _ in range(4 * workers)]
        now = utc_now()
        with sessions() as session, session.begin():
            session.execute(insert(Client), [
                {"uuid": u, "hostname": f"bench-warm-up-{u[:8]}", "first_seen_at": now,
                 "last_seen_at": now} for u in extra])
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda u: _post(port, token, u), extra))
        issued += len(extra)
        wait_until(lambda n=issued: states(sessions, WARM_UP_REASON)["sent"] == n,
                   timeout=10, message="the warm-up commands sent")
        time.sleep(0.2)  # the broker's log line
    if web_publishers(broker) < workers:
        print(f"note: only {web_publishers(broker)} of {workers} web workers published during "
              "the warm-up", flush=True)
    return issued


def _post(port: int, token: str, client_uuid: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", f"/api/clients/{client_uuid}/restart_app",
                 body=json.dumps({"reason": WARM_UP_REASON}).encode(),
                 headers={"Authorization": f"Bearer {token}",
                          "Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 202:
        raise RuntimeError(f"warm-up command: HTTP {response.status}")


def run_system(sessions, port: int, token: str, screens: list[str],
               args) -> tuple[list[tuple[str, float]], dict]:
    """Every screen's command through the API; the figures, and when each command was
    issued (client uuid, seconds after the first), for the paced reference."""
    answers, released = issue_all(port, token, screens, args.concurrency, REASON)
    issued = sum(1 for a in answers if a[1] == 202)
    refused = Counter(f"HTTP {a[1]}" if a[1] else "no answer" for a in answers if a[1] != 202)
    examples = sorted({a[4] for a in answers if a[1] != 202})[:3]
    wall = max(a[3] for a in answers) - released
    print(f"issued {issued} of {len(answers)} commands in {wall:.2f} s "
          f"({len(answers) / wall:.0f} requests/s)"
          + (f"; not 202: {dict(refused)}, e.g. {examples}" if refused else ""), flush=True)

    deadline = time.monotonic() + args.timeout
    while True:
        found = states(sessions, REASON)
        if found["completed"] >= issued or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    visible_after = time.monotonic() - released
    if found["completed"] < issued:
        print(f"FAILED: {found['completed']} of {issued} commands completed {args.timeout:g} s "
              f"after the last request; states: {dict(found)}", flush=True)

    with sessions() as session:
        rows = session.execute(
            select(ClientCommand.client_uuid, ClientCommand.issued_at, ClientCommand.sent_at,
                   ClientCommand.accepted_at, ClientCommand.completed_at)
            .where(ClientCommand.reason == REASON).order_by(ClientCommand.issued_at)).all()

    if not rows:
        raise RuntimeError(f"no command was issued; answers: {dict(refused)}, e.g. {examples}")

    def seconds(rows, end: str) -> list[float]:
        return [(getattr(r, end) - r.issued_at).total_seconds() for r in rows
                if getattr(r, end) is not None]

    schedule = [(r.client_uuid, (r.issued_at - rows[0].issued_at).total_seconds())
                for r in rows]
    return schedule, {
        "requests": len(answers), "accepted_202": issued,
        "not_202": dict(refused), "not_202_examples": examples,
        "issue_wall_s": round(wall, 2), "requests_per_second": round(len(answers) / wall),
        "http_ms": spread([a[3] - a[2] for a in answers], 0.5, 0.99, 1.0),
        "states": dict(found),
        "all_completed": found["completed"] == len(screens),
        "all_completed_in_database_after_s": round(visible_after, 2),
        "completion_ms": spread(seconds(rows, "completed_at"), 0.5, 0.99, 1.0),
        "dispatch_ms": spread(seconds(rows, "sent_at"), 0.5, 0.99, 1.0),
        "accepted_ms": spread(seconds(rows, "accepted_at"), 0.5, 0.99),
        "puback_recorded_after_accepted": sum(
            1 for r in rows if r.sent_at and r.accepted_at and r.sent_at > r.accepted_at),
    }


# Figures ---------------------------------------------------------------------------------


def spread(values: list[float], *quantiles: float) -> dict[str, float | None]:
    """Quantiles of seconds, in ms: p50, p99 ... and max for 1.0 (as bench/api.py does)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for q in quantiles:
        key = "max" if q == 1.0 else f"p{round(q * 100)}"
        out[key] = (round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)
                    if ordered else None)
    return out


def report(references: dict[str, dict], system: dict, screens: int) -> dict:
    def line(label: str, f: dict) -> None:
        tail = f"  max {f['max']:>7} ms" if "max" in f else ""
        print(f"{label:<58} p50 {f['p50']:>7} ms  p99 {f['p99']:>7} ms{tail}", flush=True)

    for name, reference in references.items():
        line(f"reference {name}, publish to completed ack", reference["completion_ms"])
        line(f"reference {name}, publish to accepted ack", reference["accepted_ms"])
    line("system, creation to completion", system["completion_ms"])
    line("system, API accept to PUBACK (sent_at)", system["dispatch_ms"])
    line("system, creation to accepted", system["accepted_ms"])
    line("system, HTTP request", system["http_ms"])
    p99 = system["completion_ms"]["p99"]
    ratios = {name: round(p99 / r["completion_ms"]["p99"], 2) if p99 else None
              for name, r in references.items()}
    for name, ratio in ratios.items():
        print(f"completion p99 ratio to the reference {name}: {ratio}", flush=True)
    completion_met = system["all_completed"] and p99 is not None and p99 <= COMPLETION_BUDGET_MS
    dispatch_p50 = system["dispatch_ms"]["p50"]
    dispatch_met = dispatch_p50 is not None and dispatch_p50 <= DISPATCH_BUDGET_MS
    print(f"budget: all {screens} completed with p99 <= {COMPLETION_BUDGET_MS:g} ms: "
          f"{'met' if completion_met else 'MISSED'}; dispatch p50 <= {DISPATCH_BUDGET_MS:g} ms: "
          f"{'met' if dispatch_met else 'MISSED'}", flush=True)
    return {
        "completion_p99_ratio_to_reference": ratios,
        "budgets": {
            "all_completed_with_p99_within_1_s": completion_met,
            "dispatch_p50_within_30_ms": dispatch_met,
        },
    }


# Main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screens", type=int, default=1000,
                        help="simulated screens, and commands (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="client processes issuing the commands (default: %(default)s)")
    parser.add_argument("--processes", type=int, default=2,
                        help="processes of the simulated fleet (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn workers (default: %(default)s)")
    parser.add_argument("--speed", type=float, default=1000.0,
                        help="the simulator's --speed: restart_app takes 1-3 s divided by it "
                        "(default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for every command to complete (default: "
                        "%(default)s)")
    parser.add_argument("--postgres-admin-url", help="default: the local socket")
    parser.add_argument("--record", action="store_true", help="write bench/results/")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "bench/commands.py",
                          *(sys.argv[1:] if argv is None else argv)])
    load_before = os.getloadavg()

    workdir = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    (workdir / "empty.env").write_text("")
    broker = start_broker()
    database: Database | None = None
    engine = None
    stack: Stack | None = None
    try:
        database = Database.create("postgresql", args.postgres_admin_url)
        screens = provision_screens(broker, workdir / "devices.json", args.screens)
        stack = Stack(workdir, {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
            "INFOSCREEN_ENV_FILE": str(workdir / "empty.env"), "LOG_LEVEL": "WARNING",
            "DATABASE_URL": database.url, "SECRET_KEY": os.urandom(24).hex(),
            "MQTT_HOST": broker.host, "MQTT_PORT": str(broker.port),
            "MQTT_USER": broker.server.username, "MQTT_PASSWORD": broker.server.password,
            "MQTT_TOPIC_PREFIX": PREFIX, "BROKER_DIR": str(broker.directory),
        })
        port = free_port()
        started = time.monotonic()
        stack.start("listener", "listener",
                    LISTENER_CLIENT_ID=f"bench-listener-{uuid.uuid4().hex[:6]}")
        stack.start("serve", "serve", "--bind", f"127.0.0.1:{port}",
                    "--workers", str(args.workers))
        stack.start("simulate", "simulate", "--clients", str(args.screens),
                    "--credentials", str(workdir / "devices.json"),
                    "--processes", str(args.processes), "--speed", f"{args.speed:g}",
                    "--crash-rate", "0", "--service-failed-rate", "0",
                    MQTT_PORT=str(broker.device_port))  # screens log in on the devices' port
        engine = make_engine(database.url)
        sessions = make_session_factory(engine)
        wait_until(lambda: web_up(port), timeout=60, interval=0.2, message="the web server")

        def registered() -> bool:
            stack.check_running()
            with sessions() as session:
                return session.scalar(select(func.count()).select_from(Client)) >= args.screens

        wait_until(registered, timeout=180, interval=0.5,
                   message=f"{args.screens} screens registered by the listener")
        print(f"{args.screens} screens registered {time.monotonic() - started:.1f} s after the "
              "processes started", flush=True)
        with sessions() as session, session.begin():
            token = create_token(session, "bench-commands", "operator", now=utc_now(),
                                 actor="bench")
        warm_up(sessions, port, token, broker, args.workers)

        references = {"at once": run_reference(broker, screens, args.timeout)}
        print(f"reference at once: {args.screens} commands completed within "
              f"{references['at once']['all_completed_after_ms']:.0f} ms", flush=True)
        # Let the listener catch up with the reference's acks before the system's turn.
        expected = ACKS_PER_COMMAND * args.screens
        try:
            wait_until(lambda: unknown_acks(sessions) >= expected, timeout=60, interval=0.2,
                       message="the listener to count the reference's acks")
        except AssertionError:
            print(f"note: the listener counted {unknown_acks(sessions)} of the reference's "
                  f"{expected} acks as unknown", flush=True)
        time.sleep(1)

        schedule, system = run_system(sessions, port, token, screens, args)
        stack.check_running()
        # The system's commands arrive at the API's pace, not all at once: the same commands
        # on the same schedule, without the backend, are the like-for-like reference.
        time.sleep(1)
        references["paced like the API"] = run_reference(
            broker, [u for u, _ in schedule], args.timeout, [t for _, t in schedule])
        stack.check_running()
    except BaseException:
        if stack is not None:
            print(stack.log_tails(), file=sys.stderr)
        raise
    finally:
        if stack is not None:
            stack.stop()
        if engine is not None:
            engine.dispose()
        if database is not None and database.drop:
            database.drop()
        broker.remove()
        shutil.rmtree(workdir, ignore_errors=True)

    figures = report(references, system, args.screens)
    summary = {
        **run_facts(command),
        "load_average_before": [round(v, 2) for v in load_before],
        "screens": args.screens, "concurrency": args.concurrency,
        "simulator_processes": args.processes, "simulator_speed": args.speed,
        "gunicorn_workers": args.workers,
        "references": references, "system": system, **figures,
    }
    if args.record:
        path = ROOT / "bench" / "results" / (
            f"commands-postgresql-{datetime.now(UTC):%Y-%m-%d}.json")
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"recorded in {path.relative_to(ROOT)}")
    return 0 if system["all_completed"] else 1


if __name__ == "__main__":
    sys.exit(main())

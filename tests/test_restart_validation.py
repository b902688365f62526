"""RESTART_VALIDATION_CHECKLIST.md, automated: the real processes (`infoscreen serve`,
`listener`, `scheduler`, `simulate`) against the project's broker, `mosquitto_sub` watching
the command topic, and a restart issued through the API reaching `completed`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from core.clock import utc_now
from core.staff import create_token
from simulator.credentials import write_credentials
from tests.helpers import free_port, wait_until, web_up

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


class Stack:
    def __init__(self, env: dict[str, str], cwd: Path):
        self.env, self.cwd = env, cwd
        self.processes: list[subprocess.Popen] = []

    def start(self, *argv: str, name: str, **env: str) -> subprocess.Popen:
        log = open(self.cwd / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, cwd=self.cwd, env={**self.env, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, text=True)
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def call(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.fixture
def stack(db, broker, tmp_path):
    (tmp_path / "empty.env").write_text("")
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": db.url, "MQTT_HOST": broker.host,
           "MQTT_PORT": str(broker.port), "MQTT_USER": broker.server.username,
           "MQTT_PASSWORD": broker.server.password, "SECRET_KEY": "k" * 40,
           "BROKER_DIR": str(broker.directory), "SCHEDULER_POLL_SECONDS": "1",
           "INFOSCREEN_ENV_FILE": str(tmp_path / "empty.env"), "PYTHONPATH": str(ROOT)}
    running = Stack(env, tmp_path)
    yield running
    running.stop()
    # The screen's retained presence and the scheduler's retained monitor state stay at the
    # broker; later tests must not see them.
    uuid = broker.device_a.username
    for login, topic in ((broker.device_a, f"infoscreen/{uuid}/status"),
                         (broker.server, f"infoscreen/monitoring/clients/{uuid}")):
        client = broker.client(login)
        client.connect(broker.host, broker.port_for(login))
        client.loop_start()
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=5)
        client.disconnect()
        client.loop_stop()


def test_the_restart_validation_checklist(db, broker, stack, tmp_path):
    assert shutil.which("mosquitto_sub"), "mosquitto_sub is missing: run scripts/bootstrap.sh"
    screen = broker.device_a
    infoscreen = [sys.executable, "-m", "infoscreen"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    credentials = tmp_path / "devices.json"
    write_credentials(credentials, [(screen.username, screen.password)])
    with db.sessions() as session, session.begin():
        operator = create_token(session, "checklist", "operator", now=utc_now(), actor="test")
        admin = create_token(session, "checklist-admin", "admin", now=utc_now(), actor="test")

    stack.start(*infoscreen, "listener", name="listener")
    stack.start(*infoscreen, "scheduler", name="scheduler")
    stack.start(*infoscreen, "serve", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                name="serve")
    stack.start(*infoscreen, "simulate", "--clients", "1", "--credentials", str(credentials),
                "--speed", "20", "--heartbeat-interval", "1", "--crash-rate", "0",
                "--service-failed-rate", "0", name="simulate",
                MQTT_PORT=str(broker.device_port))  # a device logs in on the devices' port
    wait_until(lambda: web_up(base), timeout=30, message="the web server")

    # 1. The screen is alive.
    def alive() -> bool:
        status, _, body = call("GET", f"{base}/api/clients/{screen.username}", operator)
        return status == 200 and body["status"] == "alive"

    wait_until(alive, timeout=30, interval=0.2, message="the simulated screen alive")

    # 2. Watch the command topic as the server login (line-buffered, to see the SUBACK).
    watcher = stack.start(
        "stdbuf", "-oL", "mosquitto_sub", "-d", "-V", "mqttv5", "-h", broker.host,
        "-p", str(broker.port), "-u", broker.server.username, "-P", broker.server.password,
        "-t", f"infoscreen/{screen.username}/commands", "-C", "1", name="mosquitto_sub")
    watched = tmp_path / "mosquitto_sub.log"
    wait_until(lambda: "SUBACK" in watched.read_text(), timeout=10,
               message="mosquitto_sub subscribed")

    # 3. Issue the restart.
    status, _, body = call("POST", f"{base}/api/clients/{screen.username}/restart_app",
                           operator, {"reason": "restart validation"})
    assert status == 202, body
    command = body["command"]
    assert command["state"] == "queued"

    # 4. The command went out once, in the v1 shape.
    watcher.wait(timeout=10)
    payloads = [line for line in watched.read_text().splitlines() if line.startswith("{")]
    assert len(payloads) == 1, watched.read_text()
    seen = json.loads(payloads[0])
    assert set(seen) == {"schema_version", "command_id", "client_uuid", "action", "issued_at",
                         "expires_at", "requested_by", "reason"}
    assert (seen["schema_version"], seen["command_id"], seen["action"]) == (
        "1.0", command["commandId"], "restart_app")

    # 5. The lifecycle completes.
    def final() -> dict | None:
        _, _, found = call("GET", f"{base}/api/clients/commands/{command['commandId']}",
                           operator)
        return found["command"] if found["command"]["state"] == "completed" else None

    done = wait_until(final, timeout=30, interval=0.2, message="the command completed")
    assert [h["state"] for h in done["history"]] == [
        "queued", "sent", "accepted", "execution_started", "completed"]
    assert all(done[k] for k in ("sentAt", "acceptedAt", "executionStartedAt", "completedAt"))

    # 6. The lockout holds.
    status, headers, refused = call("POST", f"{base}/api/clients/{screen.username}/restart_app",
                                    operator, {"reason": "again"})
    assert status == 409 and int(headers["Retry-After"]) >= 1
    assert refused["blockingCommand"]["commandId"] == command["commandId"]

    # 7. It is on record.
    _, _, audit = call("GET", f"{base}/api/audit", admin)
    actions = [e["action"] for e in audit["items"] if e["actor"] == "token:checklist"]
    assert "command_issued" in actions and "command_refused" in actions
    _, _, events = call("GET", f"{base}/api/events?clientUuid={screen.username}", operator)
    assert "command_completed" in [e["type"] for e in events["items"]]

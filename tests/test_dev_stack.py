"""The quick start: `infoscreen dev` brings the whole stack up and Ctrl-C takes it down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from dotenv import dotenv_values

from tests.helpers import free_port, wait_until, web_up

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REQUIRED = ("DATABASE_URL", "MQTT_HOST", "MQTT_PORT", "DEVICE_MQTT_PORT", "MQTT_USER",
            "MQTT_PASSWORD", "DEVICE_UUID", "DEVICE_USER", "DEVICE_PASSWORD", "MONITOR_USER",
            "MONITOR_PASSWORD", "INFOSCREEN_URL", "INFOSCREEN_ADMIN_USER",
            "INFOSCREEN_ADMIN_PASSWORD")


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clients(cwd) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "infoscreen", "clients", "--json"], cwd=cwd,
                          env={"PATH": os.environ["PATH"]}, capture_output=True, text=True,
                          timeout=30)
    return json.loads(done.stdout) if done.returncode == 0 else []


def children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is `pid`, with their command lines."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found.append((int(entry), command))
    return found


def descendants(pid: int) -> list[tuple[int, str]]:
    found = children(pid)
    for child, _ in list(found):
        found += descendants(child)
    return found


def the_listener(root: int) -> int | None:
    """The pid of the stack's listener process (not its respawn wrapper), or None."""
    return next((pid for pid, command in descendants(root)
                 if command.endswith("-m infoscreen listener ") and "respawn" not in command),
                None)


def publish_as_device(settings: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", settings["DEVICE_MQTT_PORT"],
         "--cafile", settings["MQTT_TLS_CA_CERT"], "-u", settings["DEVICE_USER"],
         "-P", settings["DEVICE_PASSWORD"], "-q", "1", *extra],
        capture_output=True, text=True, timeout=15)


def test_dev_runs_the_stack_with_simulated_screens_and_ctrl_c_stops_it(tmp_path):
    mqtt_port, service_port, web_port = free_port(), free_port(), free_port()
    output_file = tmp_path / "dev.out"
    with open(output_file, "w") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infoscreen", "dev", "--clients", "3",
             "--mqtt-port", str(mqtt_port), "--service-port", str(service_port),
             "--web-port", str(web_port)],
            cwd=tmp_path, env={"PATH": os.environ["PATH"]},
            stdout=output, stderr=subprocess.STDOUT, text=True,
        )
    try:
        wait_until(lambda: len(clients(tmp_path)) == 3, timeout=60, interval=0.5,
                   message="three simulated screens in `infoscreen clients`")
        settings = dotenv_values(tmp_path / "var" / "dev.env")
        assert all(settings.get(name) for name in REQUIRED), settings.keys()
        assert (tmp_path / "var" / "dev.env").stat().st_mode & 0o777 == 0o600
        assert settings["INFOSCREEN_URL"] == f"http://127.0.0.1:{web_port}"
        # TLS by default: every process of the stack trusts our CA; no plain listener.
        assert settings["MQTT_TLS_ENABLED"] == "true"
        assert settings["DEVICE_MQTT_PORT"] == str(mqtt_port)
        assert settings["MQTT_PORT"] == str(service_port)  # the stack's own processes
        assert (tmp_path / settings["MQTT_TLS_CA_CERT"]).is_file()
        conf = (tmp_path / "var" / "mosquitto" / "mosquitto.conf").read_text()
        for port in (mqtt_port, service_port):
            block = conf.split(f"listener {port} 127.0.0.1")[1].split("\n\n")[0]
            assert "certfile " in block and "tls_version tlsv1.2" in block
        assert conf.count("\nlistener ") == 2
        assert "require_certificate" not in conf
        wait_until(lambda: web_up(settings["INFOSCREEN_URL"]), timeout=30, message="/healthz")
        settings = {k: str(tmp_path / v) if k == "MQTT_TLS_CA_CERT" else v
                    for k, v in settings.items()}

        # The provisioned device, using the listener's client id five times in a row, logs
        # in as itself and leaves the listener connected.
        for _ in range(5):
            sent = publish_as_device(settings, "-i", settings["LISTENER_CLIENT_ID"],
                                     "-t", f"infoscreen/{settings['DEVICE_UUID']}/heartbeat",
                                     "-m", "{}")
            assert sent.returncode == 0, sent.stderr
        assert "already connected" not in output_file.read_text()

        # One of the listener's worker processes (its writer, its screenshot path) dies: the
        # listener exits, and the stack brings it back.
        listener = the_listener(proc.pid)
        assert listener is not None
        workers = [pid for pid, command in children(listener) if "spawn_main" in command]
        assert len(workers) == 2
        os.kill(max(workers), signal.SIGKILL)
        wait_until(lambda: the_listener(proc.pid) not in (None, listener), timeout=30,
                   interval=0.2, message="a new listener process")
        discovery = {"uuid": settings["DEVICE_UUID"], "hostname": "after-respawn",
                     "ip": "10.0.0.9", "software_version": "1.0"}
        assert publish_as_device(settings, "-t", f"infoscreen/{settings['DEVICE_UUID']}/"
                                 "discovery", "-m", json.dumps(discovery)).returncode == 0
        wait_until(lambda: any(c.get("hostname") == "after-respawn" for c in clients(tmp_path)),
                   timeout=30, interval=0.5, message="the new listener to store a discovery")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # a failed check: leave no part of the stack running
            stack = descendants(proc.pid)
            proc.kill()
            for pid, _ in stack:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    output = output_file.read_text()
    assert "Infoscreen dev stack" in output and f"127.0.0.1:{web_port}" in output
    assert "respawn: " in output and "exited with 1" in output
    wait_until(lambda: not any(port_in_use(p) for p in (mqtt_port, service_port, web_port)),
               timeout=15,
               message="the broker and the web server to be gone")


@contextlib.contextmanager
def quick_start(cwd, output_file) -> Iterator[str]:
    """`infoscreen dev --clients 3` in `cwd` on free ports, until the block ends (Ctrl-C);
    yields the web server's URL."""
    ports = [str(free_port()) for _ in range(3)]
    with open(output_file, "a") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infoscreen", "dev", "--clients", "3", "--mqtt-port",
             ports[0], "--service-port", ports[1], "--web-port", ports[2]],
            cwd=cwd, env={"PATH": os.environ["PATH"]}, stdout=output,
            stderr=subprocess.STDOUT, text=True)
    try:
        yield f"http://127.0.0.1:{ports[2]}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            stack = descendants(proc.pid)
            proc.kill()
            for pid, _ in stack:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def cli(cwd, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infoscreen", *args], cwd=cwd, input=stdin,
                          env={"PATH": os.environ["PATH"]}, capture_output=True, text=True,
                          timeout=120)


def test_a_backup_taken_while_it_runs_brings_the_screens_back_after_the_database_is_lost(
        tmp_path):
    output = tmp_path / "dev.out"
    with quick_start(tmp_path, output):
        wait_until(lambda: len(clients(tmp_path)) == 3, timeout=60, interval=0.5,
                   message="three simulated screens")
        added = cli(tmp_path, "user", "add", "olga", "--role", "operator", "--password-stdin",
                    stdin="a long enough password\n")
        assert added.returncode == 0, added.stderr
        taken = cli(tmp_path, "backup", "--output", str(tmp_path / "site.tar.gz"))
        assert taken.returncode == 0, taken.stderr
        screens = sorted(c["uuid"] for c in clients(tmp_path))
    (tmp_path / "var" / "infoscreen.db").unlink()
    assert clients(tmp_path) == []
    refused = cli(tmp_path, "restore", str(tmp_path / "site.tar.gz"))
    assert refused.returncode == 1 and "--force" in refused.stderr  # the broker files exist
    restored = cli(tmp_path, "restore", str(tmp_path / "site.tar.gz"), "--force")
    assert restored.returncode == 0, restored.stderr
    assert sorted(c["uuid"] for c in clients(tmp_path)) == screens
    with quick_start(tmp_path, output) as url:
        wait_until(lambda: web_up(url), timeout=60, message="/healthz")
        wait_until(lambda: all(c["status"] == "alive" for c in clients(tmp_path))
                   and len(clients(tmp_path)) == 3, timeout=60, interval=0.5,
                   message="the same three screens, alive again")
        assert sorted(c["uuid"] for c in clients(tmp_path)) == screens
        assert "olga" in cli(tmp_path, "user", "list").stdout

"""The quick start: `infoscreen dev` brings the whole stack up and Ctrl-C takes it down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from dotenv import dotenv_values

from tests.helpers import free_port, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REQUIRED = ("DATABASE_URL", "MQTT_HOST", "MQTT_PORT", "MQTT_USER", "MQTT_PASSWORD",
            "DEVICE_UUID", "DEVICE_USER", "DEVICE_PASSWORD", "MONITOR_USER",
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


def healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200
    except OSError:
        return False


def test_dev_runs_the_stack_with_simulated_screens_and_ctrl_c_stops_it(tmp_path):
    mqtt_port, web_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infoscreen", "dev", "--clients", "3",
         "--mqtt-port", str(mqtt_port), "--web-port", str(web_port)],
        cwd=tmp_path, env={"PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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
        assert settings["MQTT_PORT"] == str(mqtt_port)
        assert (tmp_path / settings["MQTT_TLS_CA_CERT"]).is_file()
        conf = (tmp_path / "var" / "mosquitto" / "mosquitto.conf").read_text()
        block = conf.split(f"listener {mqtt_port} 127.0.0.1")[1].split("\n\n")[0]
        assert "certfile " in block and "tls_version tlsv1.2" in block
        assert conf.count("\nlistener ") == 1 and "certfile " in conf
        assert "require_certificate" not in conf
        wait_until(lambda: healthy(settings["INFOSCREEN_URL"]), timeout=30, message="/healthz")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    assert "Infoscreen dev stack" in output and f"127.0.0.1:{web_port}" in output
    wait_until(lambda: not port_in_use(mqtt_port) and not port_in_use(web_port), timeout=15,
               message="the broker and the web server to be gone")

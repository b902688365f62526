"""The `infoscreen listener` process itself: it starts from the environment and exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import func, select

from core.models import Client, Screenshot
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.broker


def _jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (160, 90), (20, 90, 160)).save(out, "JPEG")
    return out.getvalue()


SCREENSHOT = _jpeg()


def screenshots(db) -> list[str]:
    with db.sessions() as session:
        return list(session.scalars(select(Screenshot.client_uuid)))


def process_env(broker, db, screenshot_dir, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": db.url,
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USER": broker.server.username,
        "MQTT_PASSWORD": broker.server.password,
        "LISTENER_CLIENT_ID": f"proc-{uuid.uuid4().hex[:6]}",
        "SCREENSHOT_DIR": str(screenshot_dir),
        # Not the default ports: a stack running on this machine may hold them.
        "LISTENER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "SCHEDULER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        **extra,
    }


def test_sigterm_writes_what_was_taken_and_exits_zero(db, broker, publish_as, tmp_path):
    metrics_port = free_port()
    env = process_env(broker, db, tmp_path, LISTENER_FLUSH_MS="5000", LISTENER_BATCH_SIZE="50000",
                      LISTENER_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}")
    proc = subprocess.Popen([sys.executable, "-m", "infoscreen", "listener"], env=env,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        import urllib.request

        def metric(name: str) -> float:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                              timeout=1).read().decode()
            except OSError:
                return -1
            return sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith(name) and not line.startswith("#"))

        wait_until(lambda: metric("infoscreen_listener_received_total") >= 0, timeout=15,
                   message="listener metrics up")
        publisher = publish_as(broker.simulator)
        for _ in range(30):
            publisher.publish(f"infoscreen/{uuid.uuid4()}/heartbeat", {})
        # Screenshots take a path of their own (a process beside the writer). Its session
        # begins when that process has subscribed: until then a capture is lost, so one goes
        # every second until one is stored.
        screen = str(uuid.uuid4())

        def stored_one() -> bool:
            if not screenshots(db):
                publisher.publish(f"infoscreen/{screen}/screenshot", SCREENSHOT)
            return set(screenshots(db)) == {screen}

        wait_until(stored_one, timeout=30, interval=1, message="screenshot stored")
        # Received but not yet written: the flush interval is 5 s.
        wait_until(lambda: metric("infoscreen_listener_received_total") == 30, timeout=10,
                   message="30 received")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its worker processes too: they hold stderr
        stderr = proc.stderr.read()
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Client)) == 31
    assert "30 pending messages written" in stderr
    assert len(list(tmp_path.glob("*/*"))) == 2 * len(screenshots(db))  # picture, thumbnail


def test_it_refuses_to_start_with_a_clear_message_on_bad_settings(db, broker, tmp_path):
    env = process_env(broker, db, tmp_path, MQTT_PORT="not-a-port")
    done = subprocess.run([sys.executable, "-m", "infoscreen", "listener"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "MQTT_PORT" in done.stderr

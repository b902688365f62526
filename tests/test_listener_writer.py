"""The hand-over from the listener process to its writer process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listener.writer import pack, unpack
from tests.helpers import wait_until
from tests.test_listener_process import process_env

AT = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)


def test_records_survive_the_pipe_exactly():
    buffer = bytearray()
    sent = [
        ("infoscreen/a/heartbeat", b"{}", False, AT),
        ("infoscreen/\u00e9/service_failed", b"", True, AT),
        ("infoscreen/b/health", bytes(range(256)) * 300, False, AT),
    ]
    for record in sent:
        pack(buffer, *record)
    assert list(unpack(bytes(buffer))) == sent


def writer_pid(parent: int) -> int | None:
    """The writer among the listener's children (multiprocessing also starts a tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    for pid in children.read_text().split() if children.exists() else []:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return int(pid)
    return None


@pytest.mark.broker
def test_the_listener_exits_with_an_error_when_its_writer_dies(db, broker):
    proc = subprocess.Popen([sys.executable, "-m", "infoscreen", "listener"],
                            env=process_env(broker, db), stderr=subprocess.PIPE, text=True)
    try:
        child = wait_until(lambda: writer_pid(proc.pid), timeout=15, message="writer process")
        os.kill(child, signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "writer process exited" in proc.stderr.read()

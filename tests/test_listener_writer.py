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


def children(parent: int) -> list[int]:
    """The listener's worker processes, oldest first: the screenshot path, then the writer
    (multiprocessing also starts a resource tracker, which is not one)."""
    listing = Path(f"/proc/{parent}/task/{parent}/children")
    pids = [int(pid) for pid in (listing.read_text().split() if listing.exists() else [])
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return sorted(pids)


def writer_pid(parent: int) -> int | None:
    """The writer, once both worker processes run (it starts second)."""
    workers = children(parent)
    return workers[-1] if len(workers) == 2 else None


@pytest.mark.broker
@pytest.mark.parametrize("which, name", [(0, "listener-screenshots"), (1, "writer")])
def test_the_listener_exits_with_an_error_when_one_of_its_processes_dies(db, broker, tmp_path,
                                                                         which, name):
    proc = subprocess.Popen([sys.executable, "-m", "infoscreen", "listener"],
                            env=process_env(broker, db, tmp_path), stderr=subprocess.PIPE,
                            text=True)
    try:
        workers = wait_until(lambda: len(children(proc.pid)) == 2 and children(proc.pid),
                             timeout=15, message="both worker processes")
        os.kill(workers[which], signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"{name} process exited" in proc.stderr.read()

"""The dev stack's respawn wrapper: a dead process is started again, with a back-off."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from infoscreen.respawn import MAX_DELAY, STABLE_SECONDS, Respawner
from tests.helpers import wait_until

EXIT_1 = [sys.executable, "-c", "import sys; sys.exit(1)"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_process_that_keeps_dying_is_started_again_ever_more_slowly():
    respawner = Respawner(EXIT_1, monotonic=Clock(), log=lambda line: None)
    waits = [respawner.step() for _ in range(7)]
    assert [code for code, _ in waits] == [1] * 7
    assert [wait for _, wait in waits] == [1, 2, 4, 8, 16, MAX_DELAY, MAX_DELAY]


def test_a_run_that_lasted_resets_the_back_off(monkeypatch):
    clock = Clock()
    respawner = Respawner(EXIT_1, monotonic=clock, log=lambda line: None)
    respawner.step()
    respawner.step()
    real_popen = subprocess.Popen

    def long_run(argv):  # this time the child runs for a stable while
        clock.now += STABLE_SECONDS
        return real_popen(argv)

    monkeypatch.setattr(subprocess, "Popen", long_run)
    assert respawner.step() == (1, 1.0)


def test_a_signal_stops_the_child_and_the_wrapper_without_a_restart():
    lines: list[str] = []
    respawner = Respawner([sys.executable, "-c", "import time; time.sleep(60)"],
                          log=lines.append)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(respawner.run()))
    thread.start()
    wait_until(lambda: respawner.child is not None, timeout=5, message="the child")
    respawner.stop(signal.SIGTERM)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert result == [-signal.SIGTERM] and lines == []

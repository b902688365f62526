"""Keep one process of the dev stack running: start it again when it dies, with a back-off.

`infoscreen dev` runs every process through this wrapper under honcho, which stops the whole
stack as soon as any one process exits. A listener that exits 1 because its writer died (so
that a supervisor restarts it) must not take the broker, the web server and the simulator
down with it:

    python -m infoscreen.respawn -- COMMAND [ARG ...]

SIGTERM or SIGINT stops the command and the wrapper, with the command's exit code.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_SECONDS = 60.0  # a run this long resets the back-off


class Respawner:
    def __init__(self, argv: Sequence[str], *, monotonic: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = lambda line: print(line, flush=True)):
        self.argv = list(argv)
        self.monotonic = monotonic
        self.log = log
        self.delay = FIRST_DELAY
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None

    def step(self) -> tuple[int, float]:
        """Run the command once; returns its exit code and how long to wait before the next
        run (the back-off doubles after a short run and resets after a stable one)."""
        started = self.monotonic()
        self.child = subprocess.Popen(self.argv)
        if self.stopping.is_set():  # a signal that came while the child was starting
            self.child.terminate()
        code = self.child.wait()
        if self.monotonic() - started >= STABLE_SECONDS:
            self.delay = FIRST_DELAY
        wait, self.delay = self.delay, min(MAX_DELAY, self.delay * 2)
        return code, wait

    def run(self) -> int:
        while True:
            code, wait = self.step()
            if self.stopping.is_set():
                return code
            self.log(f"respawn: {self.argv[0]} exited with {code}; starting it again in "
                     f"{wait:g} s")
            if self.stopping.wait(wait):
                return code

    def stop(self, signum: int, _frame: object = None) -> None:
        self.stopping.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m infoscreen.respawn -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    respawner = Respawner(argv[1:])
    signal.signal(signal.SIGTERM, respawner.stop)
    signal.signal(signal.SIGINT, respawner.stop)
    code = respawner.run()
    return code if code >= 0 else 128 - code  # a child ended by signal N: the shell's 128+N


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

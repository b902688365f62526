"""The broker plugin that closes shared subscriptions on the listeners devices use.

Its source is guard/infoscreen_guard.c (why it exists is written there). It is compiled here,
on demand, against the broker's plugin headers; the container image builds it in its own
Dockerfile (mosquitto/Dockerfile).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).parent / "guard" / "infoscreen_guard.c"
BUILD_HINT = "sudo apt-get install -y gcc libc6-dev mosquitto-dev libmosquitto-dev"


class GuardBuildError(RuntimeError):
    """The plugin could not be compiled; the message says what to install."""


def build_guard(directory: Path) -> Path:
    """The compiled plugin in `directory`, built when this version of its source is not.

    The file name carries a hash of the source, so a changed source is never mistaken for
    an old build, and a broker config names exactly the build it was written for.
    """
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = directory / f"infoscreen_guard-{digest}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise GuardBuildError(
            f"the broker plugin needs a C compiler and Mosquitto's plugin headers:\n  {BUILD_HINT}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    result = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(partial), str(SOURCE)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise GuardBuildError(
            f"could not compile the broker plugin {SOURCE.name}:\n"
            f"{result.stderr.strip()[:800]}\nInstall the headers with:\n  {BUILD_HINT}"
        )
    os.replace(partial, target)
    for old in directory.glob("infoscreen_guard-*.so"):
        if old != target:
            old.unlink(missing_ok=True)
    return target

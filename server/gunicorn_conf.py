"""gunicorn's settings that come from ours: its logging (LOG_LEVEL, LOG_FORMAT), the same as
every other process's, with its access log through the same handler; and the folder where
every worker keeps its request metrics (server/metrics.py)."""

import multiprocessing
import os
import shutil
import tempfile

# First, before anything imports prometheus_client: it chooses how to keep values when it is
# imported, and the workers inherit that choice from this process. A fresh folder per start.
_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="infoscreen-metrics-")

from core.config import load_settings  # noqa: E402
from core.logs import logging_config  # noqa: E402

_settings = load_settings()
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)
multiprocessing.current_process().name = "web"  # the workers are forked from here


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)

"""LOG_FORMAT=json: every line the processes print is one JSON object with the same fields;
LOG_LEVEL in any case."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from core.config import Settings
from core.logs import configure_logging, ids
from tests.helpers import free_port, wait_until
from tests.test_listener_process import process_env

FIELDS = {"time", "level", "logger", "process", "pid", "message"}


def test_a_json_line_has_the_fields_and_the_ids_given(capsys):
    try:
        configure_logging("info", "json")
        logging.getLogger("scheduler.recovery").warning(
            "auto-recovery gave up", extra=ids(client_uuid="c-1", command_id=None))
        [line] = capsys.readouterr().err.strip().splitlines()
    finally:
        configure_logging("INFO")
    record = json.loads(line)
    assert FIELDS <= set(record) and record["client_uuid"] == "c-1"
    assert "command_id" not in record
    assert (record["level"], record["logger"], record["message"]) == (
        "WARNING", "scheduler.recovery", "auto-recovery gave up")


def test_log_level_and_format_take_any_case():
    settings = Settings(LOG_LEVEL="debug", LOG_FORMAT="JSON")
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")


def _json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing printed"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert FIELDS <= set(records[-1]), line
    return records


def _run_until(command: list[str], env: dict[str, str], ready) -> str:
    """Run until `ready(output so far)` holds, then SIGTERM; everything it printed."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: ready("".join(lines)), timeout=30, message=f"{command[3]} ready")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    return "".join(lines)


@pytest.mark.broker
@pytest.mark.parametrize("process, says", [("listener", "subscribing"),
                                           ("scheduler", "scheduler running")])
def test_the_listener_and_the_scheduler_print_only_json(db, broker, tmp_path, process, says):
    env = process_env(broker, db, tmp_path / "shots", LOG_FORMAT="json", LOG_LEVEL="debug",
                      SCHEDULER_POLL_SECONDS="0.2")
    output = _run_until([sys.executable, "-m", "infoscreen", process], env,
                        lambda out: says in out and out.count("\n") >= 3)
    records = _json_lines(output)
    assert any(r["logger"].startswith(process) for r in records)
    assert process in {r["process"] for r in records}


def test_the_web_server_prints_only_json_access_lines_included(db, tmp_path):
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": db.url,
           "SECRET_KEY": "k" * 40, "LOG_FORMAT": "json"}

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                          timeout=1).status == 200
        except OSError:
            return False

    output = _run_until([sys.executable, "-m", "infoscreen", "serve", "--bind",
                         f"127.0.0.1:{port}", "--workers", "1"], env,
                        lambda out: answers() and "/healthz" in out)
    records = _json_lines(output)
    assert any(r["logger"] == "gunicorn.access" and "/healthz" in r["message"]
               for r in records)

"""The lockout under real concurrency: gunicorn with several workers, requests from several
processes at once, on both databases."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.clock import utc_now
from core.models import Client, ClientCommand
from core.staff import create_token
from tests.helpers import free_port, wait_until, web_up

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PROCESSES, THREADS = 5, 10  # 50 requests


def _post(url: str, token: str) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _burst(url: str, token: str, start, results) -> None:
    """One client process: its threads all fire when every process is ready."""
    with ThreadPoolExecutor(THREADS) as pool:
        start.wait()
        results.extend(list(pool.map(lambda _: _post(url, token), range(THREADS))))


@pytest.fixture
def server(db, broker, tmp_path):
    port = free_port()
    (tmp_path / "empty.env").write_text("")
    env = {**os.environ, "DATABASE_URL": db.url, "MQTT_HOST": broker.host,
           "MQTT_PORT": str(broker.port), "MQTT_USER": broker.server.username,
           "MQTT_PASSWORD": broker.server.password, "SECRET_KEY": "k" * 40,
           "INFOSCREEN_ENV_FILE": str(tmp_path / "empty.env"), "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infoscreen", "serve", "--workers", "3",
         "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    try:
        wait_until(lambda: web_up(base), timeout=30, message="gunicorn answering /healthz")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_fifty_concurrent_restarts_give_one_command_and_49_conflicts(db, broker, server):
    device = broker.device_a.username
    with db.sessions() as session, session.begin():
        now = utc_now()
        session.add(Client(uuid=device, first_seen_at=now, last_seen_at=now))
        token = create_token(session, "burst", "operator", now=now, actor="test")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start, results = manager.Barrier(PROCESSES), manager.list()
        url = f"{server}/api/clients/{device}/restart"
        workers = [context.Process(target=_burst, args=(url, token, start, results))
                   for _ in range(PROCESSES)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        statuses = sorted(results)
    assert statuses.count(202) == 1, statuses
    assert statuses.count(409) == 49, statuses
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ClientCommand)) == 1

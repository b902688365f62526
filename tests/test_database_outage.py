"""A database that goes away mid-stream: the listener holds its batch and loses nothing."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from sqlalchemy import func, select

from core.models import Client
from migrations import runner as migrate
from tests.conftest import RunningListener, make_settings
from tests.helpers import wait_until
from tests.postgres_cluster import PostgresCluster

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def clients(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Client))


def publish_heartbeats(publisher, n: int) -> None:
    for _ in range(n):
        publisher.publish(f"infoscreen/{uuid.uuid4()}/heartbeat", {}, qos=1)


def test_a_postgres_restart_mid_stream_loses_nothing(broker, publish_as):
    from core.db import make_engine, make_session_factory

    cluster = PostgresCluster()
    try:
        cluster.start()
        migrate.upgrade(cluster.url)
        sessions = make_session_factory(make_engine(cluster.url))
        running = RunningListener(make_settings(broker, cluster.url), f"pg-{uuid.uuid4().hex[:6]}")
        publisher = publish_as(broker.simulator)
        publish_heartbeats(publisher, 100)
        wait_until(lambda: clients(sessions) == 100, timeout=10, message="first 100 stored")

        cluster.stop()
        publish_heartbeats(publisher, 100)
        wait_until(lambda: running.batcher.failures > 0, timeout=10, message="a failed write")
        assert running.batcher.backlog() > 0
        cluster.start()
        wait_until(lambda: clients(sessions) == 200, timeout=30, message="held batch stored")
        assert running.thread.is_alive()
        running.stop()
    finally:
        cluster.remove()


def test_a_locked_sqlite_file_delays_writes_but_loses_nothing(broker, publish_as, tmp_path):
    from core.db import make_engine, make_session_factory

    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    sessions = make_session_factory(make_engine(url))
    settings = make_settings(broker, f"{url}?timeout=0.2")
    running = RunningListener(settings, f"sqlite-{uuid.uuid4().hex[:6]}")
    publisher = publish_as(broker.simulator)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        publish_heartbeats(publisher, 50)
        wait_until(lambda: running.batcher.failures > 0, timeout=10, message="a failed write")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_until(lambda: clients(sessions) == 50, timeout=30, message="held batch stored")
    running.stop()

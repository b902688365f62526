"""Fixtures: real databases (SQLite and Postgres), a real Mosquitto, a running listener.

The suite runs against every database named by --db (default: sqlite,postgresql).
Postgres is reached at TEST_POSTGRES_URL (default: the local server over its socket);
each run creates and drops a database of its own there.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import make_engine, make_session_factory
from core.models import Base
from listener.service import build_listener
from migrations import runner as migrate
from tests.brokers import Login, TestBroker, TlsTestBroker
from tests.helpers import (
    close_web_app,
    make_web_app,
    scratch_postgres_database,
    tokens,
    wait_until,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default=os.environ.get("TEST_DATABASES", "sqlite,postgresql"),
        help="comma-separated databases to run the suite against (sqlite, postgresql)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames:
        kinds = [k.strip() for k in metafunc.config.getoption("--db").split(",") if k.strip()]
        metafunc.parametrize("database", kinds, indirect=True, scope="session")


@dataclass
class TestDatabase:
    kind: str
    url: str
    engine: Engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    def clean(self) -> None:
        with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture(scope="session")
def database(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[TestDatabase]:
    kind = request.param
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
        migrate.upgrade(url)
        engine = make_engine(url)
        yield TestDatabase(kind, url, engine)
        engine.dispose()
        return
    if kind != "postgresql":
        raise pytest.UsageError(f"--db: unknown database {kind!r}")
    with scratch_postgres_database("infoscreen_test") as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        yield TestDatabase(kind, url, engine)
        engine.dispose()


@pytest.fixture
def db(database: TestDatabase) -> TestDatabase:
    database.clean()
    return database


@pytest.fixture
def auth(db: TestDatabase) -> dict[str, dict[str, str]]:
    """An Authorization header per role (viewer, operator, admin)."""
    return tokens(db)


@pytest.fixture
def app(db: TestDatabase):
    """The staff web app on the test database (files that need more define their own)."""
    app = make_web_app(db.url)
    yield app
    close_web_app(app)


@pytest.fixture(scope="session")
def broker() -> Iterator[TestBroker]:
    directory = Path(tempfile.mkdtemp(prefix="infoscreen-broker-"))
    test_broker = TestBroker(directory)
    test_broker.provision()
    test_broker.start()
    yield test_broker
    test_broker.remove()


def make_settings(broker: TestBroker, database_url: str, **overrides: object) -> Settings:
    values = {
        "DATABASE_URL": database_url,
        "MQTT_HOST": broker.host,
        "MQTT_PORT": broker.port,
        "MQTT_USER": broker.server.username,
        "MQTT_PASSWORD": broker.server.password,
        "BROKER_DIR": str(broker.directory),
        "LISTENER_FLUSH_MS": 20,
        "LISTENER_MAX_PAYLOAD_BYTES": 1024,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def settings(broker: TestBroker, db: TestDatabase) -> Settings:
    return make_settings(broker, db.url)


class RunningListener:
    """A listener on threads, as the process runs it, started and stopped by the test."""

    def __init__(self, settings: Settings, client_id: str):
        self.settings = settings
        self.client_id = client_id
        self.start()

    def start(self) -> None:
        self.listener = build_listener(self.settings, client_id=self.client_id)
        self.thread = threading.Thread(target=self.listener.run, name="listener", daemon=True)
        self.thread.start()
        wait_until(self.listener.subscribed.is_set, timeout=10, message="listener subscribed")

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.listener.stop()
        self.thread.join(timeout=40)
        assert not self.thread.is_alive(), "listener did not stop"

    @property
    def batcher(self):
        return self.listener.sink.batcher


@pytest.fixture
def listener(settings: Settings) -> Iterator[RunningListener]:
    running = RunningListener(settings, f"listener-test-{uuid.uuid4().hex[:8]}")
    yield running
    running.stop()


class Publisher:
    """Publishes as one login over MQTT 5, QoS 1 by default, and waits for each PUBACK.
    Retained messages it published are cleared when the test ends."""

    def __init__(self, broker: TestBroker, login: Login):
        self.broker = broker
        self.client = broker.client(login)
        self.client.connect(broker.host, broker.port_for(login))
        self.client.loop_start()
        wait_until(self.client.is_connected, timeout=5, message=f"{login.username} connected")
        self.retained: set[str] = set()

    def publish(self, topic: str, payload: bytes | str | dict, *, qos: int = 1,
                retain: bool = False) -> mqtt.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(timeout=5)
        if retain:
            self.retained.add(topic)
        return info

    def close(self) -> None:
        for topic in self.retained:
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publish_as(broker: TestBroker) -> Iterator:
    publishers: list[Publisher] = []

    def make(login: Login) -> Publisher:
        publisher = Publisher(broker, login)
        publishers.append(publisher)
        return publisher

    yield make
    for publisher in publishers:
        publisher.close()


@pytest.fixture(scope="session")
def tls_broker() -> Iterator[TlsTestBroker]:
    """A second Mosquitto with the same logins behind TLS only: a password listener and a
    mutual-TLS listener, certificates from mosquitto.certs (see TlsTestBroker)."""
    test_broker = TlsTestBroker(Path(tempfile.mkdtemp(prefix="infoscreen-tls-broker-")))
    test_broker.provision()
    test_broker.start()
    yield test_broker
    test_broker.remove()

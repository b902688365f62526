"""What the benchmarks share: the tests' throwaway broker (the project's own generated config),
a fresh database, pipeline processes and their Prometheus counters. Loopback only."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from core.db import normalise_url
from core.models import Base
from migrations import runner as migrate
from simulator.loadgen import TlsOptions
from tests.brokers import TestBroker, TlsTestBroker
from tests.helpers import free_port, postgres_admin_url, wait_until
from tests.helpers import web_up as web_answers

ROOT = Path(__file__).resolve().parent.parent


def start_broker() -> TestBroker:
    """The tests' throwaway broker: our generated config, a server and a simulator login."""
    broker = TestBroker(Path(tempfile.mkdtemp(prefix="bench-mq-")))
    broker.provision()
    broker.start()
    return broker


def start_tls_broker() -> TlsTestBroker:
    """The same broker with TLS only (password logins on `port`, host "localhost"), as in
    production; its CA bundle is in directory/certs."""
    broker = TlsTestBroker(Path(tempfile.mkdtemp(prefix="bench-mq-tls-")))
    broker.provision()
    broker.start()
    return broker


def load_tls(broker: TestBroker) -> TlsOptions | None:
    """The load generator's TLS options for `broker` (None for a plain one)."""
    if isinstance(broker, TlsTestBroker):
        return TlsOptions(cafile=str(broker.certs.bundle))
    return None


def mqtt_env(broker: TestBroker) -> dict[str, str]:
    """How a pipeline process reaches `broker`: over TLS, verifying it against our CA, when it
    is a TlsTestBroker."""
    env = {
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USER": broker.server.username,
        "MQTT_PASSWORD": broker.server.password,
    }
    if isinstance(broker, TlsTestBroker):
        env |= {"MQTT_TLS_ENABLED": "true", "MQTT_TLS_CA_CERT": str(broker.certs.bundle)}
    return env


@dataclass
class Database:
    url: str
    drop: callable = None

    @classmethod
    def create(cls, kind: str, admin_url: str | None) -> Database:
        if kind == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-db-')}/bench.db"
            migrate.upgrade(url)
            return cls(url)
        admin = create_engine(normalise_url(admin_url) if admin_url else postgres_admin_url(),
                              isolation_level="AUTOCOMMIT")
        name = f"infoscreen_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        return cls(url, drop)

    def reset(self) -> None:
        engine = create_engine(normalise_url(self.url))
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        engine.dispose()


class Pipeline:
    """A consumer process (the listener or the reference) and its stored-messages counter."""

    def __init__(self, name: str, argv: list[str], counter: str, env: dict[str, str],
                 metrics_port: int):
        self.name, self.argv, self.counter, self.env = name, argv, counter, env
        self.metrics_port = metrics_port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: self.stored() is not None, 20, message=f"{self.name} metrics")

    def stored(self) -> float | None:
        try:
            body = urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(self.counter))

    def stop(self) -> str:
        self.process.terminate()
        _, stderr = self.process.communicate(timeout=60)
        return stderr.decode(errors="replace")


def pipelines(broker: TestBroker, database: Database) -> dict[str, Pipeline]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": database.url,
        **mqtt_env(broker),
        "LOG_LEVEL": "WARNING",
    }
    listener_port, reference_port = free_port(), free_port()
    return {
        "reference": Pipeline(
            "reference", [sys.executable, str(ROOT / "bench" / "reference_pipeline.py")],
            "bench_reference_stored_total",
            {**base, "REFERENCE_METRICS_PORT": str(reference_port)}, reference_port,
        ),
        "listener": Pipeline(
            "listener", [sys.executable, "-m", "infoscreen", "listener"],
            "infoscreen_listener_stored_total",
            {**base, "LISTENER_METRICS_ADDRESS": f"127.0.0.1:{listener_port}",
             "LISTENER_CLIENT_ID": f"bench-listener-{uuid.uuid4().hex[:6]}"},
            listener_port,
        ),
    }


def web_up(port: int) -> bool:
    """Whether the web server on this loopback port answers /healthz."""
    return web_answers(f"http://127.0.0.1:{port}")


def run_facts(command: str) -> dict[str, str]:
    """What every recorded result starts with: the command, when, and on what machine."""
    return {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }

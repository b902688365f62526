"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

DEFAULT_POSTGRES = "postgresql+psycopg:///postgres?host=/var/run/postgresql"


def postgres_admin_url() -> str:
    """Where tests and benchmarks create their databases: TEST_POSTGRES_URL, or the local
    server over its socket as the current user."""
    from core.db import normalise_url

    return normalise_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES))


@contextlib.contextmanager
def scratch_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty Postgres database for the block; its URL. Dropped afterwards."""
    import uuid

    from sqlalchemy import create_engine, text

    admin = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def make_web_app(database_url: str, **overrides: object):
    """The staff web app as gunicorn builds it, in testing mode, on `database_url`."""
    from core.config import Settings
    from server import create_app

    app = create_app(Settings.model_validate(
        {"DATABASE_URL": database_url, "SECRET_KEY": "k" * 40, **overrides}))
    app.config["TESTING"] = True
    return app


def web_up(base_url: str) -> bool:
    """Whether the web server at `base_url` answers /healthz."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Below Linux's ephemeral range (32768-60999): a port from that range, free when picked, can
# be taken as the source port of any outgoing connection before the server binds it.
PORTS = range(20_000, 32_000)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds now, for a server a test starts."""
    for _ in range(200):
        port = random.choice(PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def close_web_app(app) -> None:
    """Stop the app's command publisher and close its database connections now, not when the
    garbage collector gets to them: a suite that builds many apps would otherwise run
    Postgres out of connections."""
    from server.dispatch import stop_dispatcher
    from server.extensions import db

    stop_dispatcher(app)
    with app.app_context():
        db.engine.dispose()


def tokens(db) -> dict[str, dict[str, str]]:
    """An Authorization header per role, each with a new API token."""
    from core.clock import utc_now
    from core.staff import create_token

    with db.sessions() as session, session.begin():
        return {role: {"Authorization": "Bearer " + create_token(
            session, f"script-{role}", role, now=utc_now(), actor="test")}
            for role in ("viewer", "operator", "admin")}

"""Engine and session factory, configured the same way by every process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """One meaning of a URL for every process.

    `postgresql://` means psycopg 3, the only Postgres driver we install. A relative SQLite path
    is made absolute against the working directory, where every process of the stack starts
    (Flask-SQLAlchemy would otherwise look for it in the app's instance folder).
    """
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        if not database.startswith("file:") and not Path(database).is_absolute():
            return parsed.set(database=str(Path(database).resolve())).render_as_string(
                hide_password=False
            )
    return url


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web server read while the listener writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(engine: Engine) -> None:
    """Take SQLite's write lock when a transaction begins.

    A deferred transaction that reads and then writes fails at once with "database is locked"
    when another process wrote in between, whatever the busy timeout; an immediate one waits
    its turn. The driver's own transaction handling is switched off so that we issue BEGIN.
    """

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class DatabaseMissing(Exception):
    """The SQLite file does not exist (and was not to be created)."""


def make_engine(url: str, *, writer: bool = False, create: bool = True,
                **kwargs: Any) -> Engine:
    """`writer`: this process writes in most transactions (listener, scheduler). `create`:
    a missing SQLite file (and its folder) is made; else DatabaseMissing names it."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if not create and not path.is_file():
                raise DatabaseMissing(f"no database at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
        # The driver's timeout is SQLite's busy timeout: wait out the short write locks of the
        # other processes instead of failing. `?timeout=` in the URL overrides it.
        if "timeout" not in parsed.query:
            kwargs.setdefault("connect_args", {"timeout": 10})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", sqlite_pragmas)
        if writer:
            _begin_immediate(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def dialect_insert(bind: Session | Engine) -> Any:
    """The INSERT construct with ON CONFLICT support for the database of a session (plain or
    scoped, as Flask-SQLAlchemy's) or an engine."""
    from sqlalchemy.dialects import postgresql, sqlite

    engine = bind.get_bind() if hasattr(bind, "get_bind") else bind
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def describe_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return make_url(normalise_url(url)).render_as_string(hide_password=True)

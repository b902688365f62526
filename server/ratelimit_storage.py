"""A `limits` storage in the app's own database: RATELIMIT_STORAGE_URI=database://.

Fixed-window counters in `rate_limit_counters`, so that every gunicorn worker (and every web
server on the same database) counts one budget. Each hit is one atomic upsert: a new or
expired row starts a window, a live one is incremented, and the statement returns the count,
so concurrent hits serialise on the row on SQLite and Postgres alike. Expired rows are
harmless (the next hit restarts them); the scheduler's pruning job deletes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

from flask import current_app
from limits.storage import Storage
from sqlalchemy import Engine, case, delete, literal, select
from sqlalchemy.exc import SQLAlchemyError

from core.clock import Clock, utc_now
from core.db import dialect_insert
from core.models import RateLimitCounter

COUNTERS = RateLimitCounter.__table__
KEY_LENGTH = COUNTERS.c.key.type.length


def _app_engine() -> Engine:
    """The engine of the Flask app handling the request (Flask-SQLAlchemy's)."""
    return current_app.extensions["sqlalchemy"].engine


def stored_key(key: str) -> str:
    # Keys embed the client's address; a forged overlong one must not fail the insert.
    if len(key) <= KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class DatabaseStorage(Storage):
    """Fixed-window counters in the database. `engine` (a callable returning one) defaults to
    the current Flask app's; `clock` decides when windows start and end."""

    STORAGE_SCHEME = ["database"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, *,
                 engine: Callable[[], Engine] | None = None, clock: Clock = utc_now,
                 **options: float | str | bool) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._engine = engine or _app_engine
        self._clock = clock

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = self._clock()
        window_end = literal(now + timedelta(seconds=expiry), COUNTERS.c.expires_at.type)
        engine = self._engine()
        stmt = dialect_insert(engine)(COUNTERS).values(key=stored_key(key), count=amount,
                                           expires_at=window_end)
        # In ON CONFLICT DO UPDATE the bare columns are the existing row's.
        expired = COUNTERS.c.expires_at <= now
        stmt = stmt.on_conflict_do_update(
            index_elements=[COUNTERS.c.key],
            set_={"count": case((expired, amount), else_=COUNTERS.c.count + amount),
                  "expires_at": case((expired, window_end), else_=COUNTERS.c.expires_at)},
        ).returning(COUNTERS.c.count)
        with engine.begin() as connection:
            return connection.execute(stmt).scalar_one()

    def _live(self, key: str):
        return (COUNTERS.c.key == stored_key(key)) & (COUNTERS.c.expires_at > self._clock())

    def get(self, key: str) -> int:
        with self._engine().connect() as connection:
            return connection.scalar(select(COUNTERS.c.count).where(self._live(key))) or 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends, as a Unix time; now when there is none."""
        with self._engine().connect() as connection:
            end = connection.scalar(select(COUNTERS.c.expires_at).where(self._live(key)))
        return (end or self._clock()).timestamp()

    def check(self) -> bool:
        try:
            with self._engine().connect() as connection:
                connection.scalar(select(literal(1)))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self._engine().begin() as connection:
            return connection.execute(delete(COUNTERS)).rowcount

    def clear(self, key: str) -> None:
        with self._engine().begin() as connection:
            connection.execute(delete(COUNTERS).where(COUNTERS.c.key == stored_key(key)))

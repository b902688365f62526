"""Exactly one acting scheduler among several: a Postgres advisory lock.

The lock is held by a dedicated connection for as long as this scheduler lives; when its
process or connection dies, Postgres releases it and another scheduler takes over at its
next cycle. SQLite has no such lock: run one scheduler there (README).
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

log = logging.getLogger(__name__)

LOCK_KEY = 0x1F05C4ED  # any constant; all schedulers of one database use the same one


class Leadership:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._connection: Connection | None = None
        self.held = False

    def holds(self) -> bool:
        """Whether this scheduler may act in this cycle (takes the lock when it is free)."""
        if self.engine.dialect.name != "postgresql":
            return True
        try:
            if self._connection is None:
                self._connection = self.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            if self.held:
                self._connection.execute(text("SELECT 1"))  # still alive, so still ours
            else:
                self.held = bool(self._connection.scalar(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}))
                if self.held:
                    log.info("this scheduler is the acting one")
        except DBAPIError as exc:
            log.warning("leadership check failed (%s); not acting this cycle", exc.orig)
            self.release()
        return self.held

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            if self.held:  # at once, not when the server notices the session ended
                try:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                       {"key": LOCK_KEY})
                except SQLAlchemyError:
                    pass  # a dead connection: the server ended the session, lock and all
            try:
                # close() alone would hand the connection back to the pool, lock and all:
                # end the database session itself.
                connection.invalidate()
                connection.close()
            except SQLAlchemyError:
                pass
        self.held = False

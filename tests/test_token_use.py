"""API tokens: when they were last used is stamped rarely and never fails a request."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from core.clock import utc_now
from core.db import make_engine
from core.models import ApiToken
from core.staff import create_token, record_token_use


@pytest.fixture
def token(db) -> str:
    with db.sessions() as session, session.begin():
        return create_token(session, "zabbix", "admin", now=utc_now(), actor="test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_row(db) -> ApiToken:
    with db.sessions() as session:
        return session.scalar(select(ApiToken))


@contextmanager
def stamp_blocked(db) -> Iterator[None]:
    """Another transaction holds the lock that stamping the token's row needs."""
    if db.kind == "sqlite":
        holder = sqlite3.connect(make_url(db.url).database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # SQLite's one write lock
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    with db.engine.connect() as holder:
        holder.execute(select(ApiToken).with_for_update())  # a row lock on the token
        try:
            yield
        finally:
            holder.rollback()


def test_two_token_requests_within_a_minute_write_last_used_at_once(db, app, token):
    client = app.test_client()
    assert client.get("/api/auth/me", headers=bearer(token)).status_code == 200
    first = token_row(db).last_used_at
    assert first is not None
    assert client.get("/api/audit", headers=bearer(token)).status_code == 200
    assert token_row(db).last_used_at == first


def test_a_token_request_answers_while_its_use_cannot_be_stamped(db, app, token, caplog):
    client = app.test_client()
    with stamp_blocked(db), caplog.at_level(logging.WARNING, logger="core.staff"):
        response = client.get("/api/audit", headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json()["items"][0]["action"] == "token.create"  # the request's own read
    assert token_row(db).last_used_at is None
    assert "could not record the use of API token" in caplog.text
    # Nothing was left half-done: the next request stamps it.
    assert client.get("/api/auth/me", headers=bearer(token)).status_code == 200
    assert token_row(db).last_used_at is not None


def test_a_blocked_stamp_gives_up_quickly_and_keeps_the_connections_usual_wait(db, token):
    # One pooled connection: the stamp's and the next user's are the same.
    engine = make_engine(db.url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        usual = conn.exec_driver_sql("PRAGMA busy_timeout").scalar() if db.kind == "sqlite" \
            else None
    row = token_row(db)
    with stamp_blocked(db):
        assert record_token_use(engine, row, now=utc_now()) is False
    with engine.connect() as conn:
        if db.kind == "sqlite":
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == usual
        else:
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
    assert record_token_use(engine, row, now=utc_now()) is True
    engine.dispose()

"""Migrations from empty to head and back, and no drift between models and migrations."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from migrations import runner as migrate
from tests.helpers import postgres_admin_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    if request.param not in request.config.getoption("--db"):
        pytest.skip(f"{request.param} not selected with --db")
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    name = f"infoscreen_migrations_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_run_from_empty_to_head_and_match_the_models(empty_database):
    migrate.upgrade(empty_database)
    assert {"clients", "client_logs", "events", "ingest_rejections"} <= tables(empty_database)
    migrate.check(empty_database)  # raises when models and migrations drift


def test_migrations_downgrade_to_empty_and_up_again(empty_database):
    migrate.upgrade(empty_database)
    migrate.downgrade(empty_database, "base")
    assert tables(empty_database) <= {"alembic_version"}
    migrate.upgrade(empty_database)
    assert "clients" in tables(empty_database)


def test_the_group_a_device_reported_is_kept_as_reported_group_id(empty_database):
    migrate.upgrade(empty_database, "0006")
    engine = create_engine(empty_database)
    insert = text("INSERT INTO clients (uuid, group_id, first_seen_at, last_seen_at) "
                  "VALUES ('c1', 'hall-3', '2026-11-01 00:00:00', '2026-11-01 00:00:00')")
    try:
        with engine.begin() as conn:
            conn.execute(insert)
        migrate.upgrade(empty_database)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT reported_group_id, group_id, group_pending "
                                    "FROM clients")).one()
        assert tuple(row) == ("hall-3", None, False)
        migrate.downgrade(empty_database, "0006")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT group_id FROM clients")).scalar_one() == "hall-3"
    finally:
        engine.dispose()

"""Backup and restore, on both databases: a backup taken while the database is written holds
a consistent copy and every broker file with its checksum; a restore checks the whole archive
first, refuses to overwrite without --force, brings the data back and migrates it."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text

from core.backup import BackupError, backup, read_archive, restore
from core.db import make_engine, make_session_factory
from core.models import Client
from infoscreen.cli import main
from migrations import runner as migrate
from tests.helpers import scratch_postgres_database

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path) -> Iterator[str]:
    """A database of its own, migrated: a restore replaces it whole."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'site' / 'infoscreen.db'}"
        migrate.upgrade(url)
        yield url
        return
    with scratch_postgres_database("infoscreen_backup") as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture
def broker_dir(tmp_path) -> Path:
    """What a broker folder holds; data/ and plugins/ are made again, not backed up."""
    folder = tmp_path / "mosquitto"
    for name, body, mode in [("accounts.json", '{"x": 1}', 0o600), ("passwd", "h", 0o600),
                             ("acl", "topic read x", 0o644), ("mosquitto.conf", "c", 0o644),
                             ("certs/ca.key", "KEY", 0o600), ("certs/ca.crt", "CRT", 0o644),
                             ("data/mosquitto.db", "persist", 0o600),
                             ("plugins/guard.so", "binary", 0o755)]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        path.chmod(mode)
    return folder


def add_clients(url: str, first: int, count: int) -> None:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            session.execute(insert(Client), [
                {"uuid": f"00000000-0000-4000-8000-{n:012d}", "hostname": f"screen-{n}",
                 "first_seen_at": NOW, "last_seen_at": NOW} for n in range(first, first + count)])
    finally:
        engine.dispose()


def client_count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Client))
    finally:
        engine.dispose()


def drop_database_content(url: str) -> None:
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).unlink()
        return
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def test_a_backup_while_writing_restores_everything_and_migrates(fresh_url, broker_dir,
                                                                 tmp_path):
    add_clients(fresh_url, 0, 50)
    stop = threading.Event()

    def keep_writing() -> None:  # the listener, busy while the backup runs
        n = 1000
        while not stop.is_set():
            add_clients(fresh_url, n, 10)
            n += 10

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    archive = tmp_path / "backups" / "site.tar.gz"
    try:
        summary = backup(fresh_url, broker_dir, archive, version="test")
    finally:
        stop.set()
        writer.join(timeout=30)
    assert archive.stat().st_mode & 0o777 == 0o600
    manifest, files = read_archive(archive)
    names = {entry["path"] for entry in manifest["files"]}
    assert {"broker/accounts.json", "broker/passwd", "broker/acl", "broker/mosquitto.conf",
            "broker/certs/ca.key", "broker/certs/ca.crt"} <= names
    assert not [n for n in names if n.startswith(("broker/data", "broker/plugins"))]
    assert summary.files == len(names) and manifest["database"]["kind"] == summary.database_kind

    drop_database_content(fresh_url)
    for path in broker_dir.rglob("*"):
        if path.is_file() and path.parts[-2] != "data" and "plugins" not in path.parts:
            path.unlink()
    done = restore(archive, fresh_url, broker_dir, migrate=migrate.upgrade)
    restored = client_count(fresh_url)
    assert restored >= 50 and restored % 10 == 0  # whole transactions, never half of one
    assert (broker_dir / "certs" / "ca.key").read_text() == "KEY"
    assert (broker_dir / "certs" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (broker_dir / "acl").stat().st_mode & 0o777 == 0o644
    assert done["brokerFiles"] == len(names) - 1
    migrate.check(fresh_url)  # at head


def test_a_restore_refuses_to_overwrite_without_force(fresh_url, broker_dir, tmp_path):
    add_clients(fresh_url, 0, 5)
    archive = tmp_path / "site.tar.gz"
    backup(fresh_url, broker_dir, archive)
    add_clients(fresh_url, 100, 5)
    (broker_dir / "acl").write_text("changed since")
    with pytest.raises(BackupError, match="would overwrite .*pass --force"):
        restore(archive, fresh_url, broker_dir, migrate=migrate.upgrade)
    assert client_count(fresh_url) == 10 and (broker_dir / "acl").read_text() == "changed since"
    restore(archive, fresh_url, broker_dir, force=True, migrate=migrate.upgrade)
    assert client_count(fresh_url) == 5 and (broker_dir / "acl").read_text() == "topic read x"


def test_a_damaged_backup_changes_nothing(fresh_url, broker_dir, tmp_path):
    add_clients(fresh_url, 0, 5)
    archive = tmp_path / "site.tar.gz"
    backup(fresh_url, broker_dir, archive)
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(tampered, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "broker/acl":
                data = b"topic readwrite #"  # someone widened the ACL
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    add_clients(fresh_url, 100, 5)
    with pytest.raises(BackupError, match="broker/acl does not match its checksum"):
        restore(tampered, fresh_url, broker_dir, force=True, migrate=migrate.upgrade)
    assert client_count(fresh_url) == 10
    not_a_backup = tmp_path / "notes.tar.gz"
    not_a_backup.write_bytes(b"hello")
    with pytest.raises(BackupError, match="not a readable backup"):
        restore(not_a_backup, fresh_url, broker_dir, force=True, migrate=migrate.upgrade)


def test_the_command_line(tmp_path, broker_dir, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path / 'site.db'}"
    migrate.upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("BROKER_DIR", str(broker_dir))
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "b.tar.gz"
    assert main(["backup", "--output", str(archive)]) == 0
    assert "mode 0600" in capsys.readouterr().out
    assert main(["backup", "--output", str(archive)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["restore", str(archive)]) == 1
    assert "would overwrite" in capsys.readouterr().err
    assert main(["restore", str(archive), "--force"]) == 0
    assert "migrated" in capsys.readouterr().out
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://x@127.0.0.1:1/none")
    assert main(["restore", str(archive), "--force"]) == 1
    assert "holds a sqlite database" in capsys.readouterr().err
    manifest = json.loads(tarfile.open(archive).extractfile("manifest.json").read())
    assert manifest["format"] == 1 and os.path.basename(manifest["database"]["file"])

"""Backup and restore of everything a site cannot make again: the database, and the broker's
accounts, password files, ACL, config, CA and certificates (the CA key included).

A backup is one tar.gz, mode 0600 (it holds the CA key and the password hashes), with a
manifest listing every file with its size, mode and sha256. It is taken while everything
runs: SQLite through its online backup API, Postgres with pg_dump (one consistent snapshot).
A restore checks the whole manifest before it touches anything, refuses to overwrite what
exists unless told to, and then has the database migrated to the current schema (the caller
hands in how: the migrations live above this layer).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url

from core.clock import iso_z, utc_now
from core.db import make_engine, normalise_url

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE_DIR = "database"
BROKER_DIR = "broker"
# Made again by the broker or the quick start: its persistence, its plugin build, its pid.
BROKER_SKIPPED = ("data", "plugins")
BROKER_SKIPPED_SUFFIXES = (".pid", ".log")


class BackupError(Exception):
    """What is wrong, in one sentence that names the file or the setting."""


@dataclass(frozen=True)
class Summary:
    archive: Path
    database_kind: str
    files: int
    bytes: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _kind(url: str) -> str:
    backend = make_url(normalise_url(url)).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"DATABASE_URL: no backup for a {backend} database")
    return backend


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL for pg_dump/pg_restore without its password, and the password as PGPASSWORD
    (a command line is visible to every user of the machine)."""
    parsed: URL = make_url(normalise_url(url))
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed; it is needed to {what} "
                          "(Debian: apt install postgresql-client)")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no message"])[0][:300]
        raise BackupError(f"{command[0]} failed to {what}: {first}")


def _dump_database(url: str, folder: Path) -> tuple[str, Path]:
    kind = _kind(url)
    if kind == "sqlite":
        source = Path(make_url(normalise_url(url)).database or "")
        if not source.is_file():
            raise BackupError(f"no database at {source}")
        target = folder / "infoscreen.sqlite3"
        # The online backup API: a consistent copy while the listener and the scheduler write.
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, \
                sqlite3.connect(target) as dst:
            src.backup(dst)
        return kind, target
    target = folder / "infoscreen.pgdump"
    plain, env = _libpq(url)
    _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(target), "--dbname", plain],
         env, "dump the database")
    return kind, target


def _broker_files(broker_dir: Path) -> list[Path]:
    if not broker_dir.is_dir():
        raise BackupError(f"BROKER_DIR: no broker files at {broker_dir}")
    return sorted(
        p for p in broker_dir.rglob("*")
        if p.is_file() and p.relative_to(broker_dir).parts[0] not in BROKER_SKIPPED
        and not p.name.endswith(BROKER_SKIPPED_SUFFIXES))


def backup(database_url: str, broker_dir: Path, output: Path, *, force: bool = False,
           version: str = "unknown") -> Summary:
    if output.exists() and not force:
        raise BackupError(f"{output} exists; pass --force to replace it")
    with tempfile.TemporaryDirectory(prefix="infoscreen-backup-") as tmp:
        kind, dumped = _dump_database(database_url, Path(tmp))
        entries: list[tuple[str, bytes, int]] = [
            (f"{DATABASE_DIR}/{dumped.name}", dumped.read_bytes(), 0o600)]
        for path in _broker_files(broker_dir):
            entries.append((f"{BROKER_DIR}/{path.relative_to(broker_dir).as_posix()}",
                            path.read_bytes(), path.stat().st_mode & 0o777))
    manifest = {
        "format": FORMAT, "createdAt": iso_z(utc_now()), "version": version,
        "database": {"kind": kind, "file": entries[0][0]},
        "files": [{"path": name, "bytes": len(data), "mode": mode, "sha256": _sha256(data)}
                  for name, data, mode in entries],
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data, mode in [(MANIFEST, json.dumps(manifest, indent=2).encode(), 0o600),
                                 *entries]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(utc_now().timestamp())
            tar.addfile(info, io.BytesIO(data))
    os.replace(partial, output)
    return Summary(output, kind, len(entries), sum(len(d) for _, d, _ in entries))


# Restoring ----------------------------------------------------------------------------------


def read_archive(archive: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every file it lists, each checked; BackupError on any mismatch."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if MANIFEST not in members:
                raise BackupError(f"{archive}: no {MANIFEST}; not a backup of this backend")
            manifest = json.loads(tar.extractfile(members[MANIFEST]).read())
            if manifest.get("format") != FORMAT:
                raise BackupError(f"{archive}: backup format {manifest.get('format')!r}, "
                                  f"this version reads {FORMAT}")
            files: dict[str, bytes] = {}
            for entry in manifest["files"]:
                name = entry["path"]
                path = PurePosixPath(name)
                if path.is_absolute() or ".." in path.parts or path.parts[0] not in (
                        DATABASE_DIR, BROKER_DIR):
                    raise BackupError(f"{archive}: refusing the path {name!r}")
                member = members.get(name)
                if member is None or not member.isfile():
                    raise BackupError(f"{archive}: {name} is listed but missing")
                data = tar.extractfile(member).read()
                if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
                    raise BackupError(f"{archive}: {name} does not match its checksum; the "
                                      "backup is damaged")
                files[name] = data
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"{archive}: not a readable backup ({exc})") from None
    return manifest, files


def _database_exists(url: str) -> str | None:
    """What restoring would overwrite, or None."""
    if _kind(url) == "sqlite":
        path = Path(make_url(normalise_url(url)).database or "")
        return str(path) if path.is_file() else None
    engine = make_engine(url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    return "the database's tables" if tables else None


def restore(archive: Path, database_url: str, broker_dir: Path, *,
            migrate: Callable[[str], None], force: bool = False) -> dict[str, Any]:
    manifest, files = read_archive(archive)
    kind = manifest["database"]["kind"]
    if kind != _kind(database_url):
        raise BackupError(f"the backup holds a {kind} database, DATABASE_URL names a "
                          f"{_kind(database_url)} one")
    broker = {name: data for name, data in files.items() if name.startswith(f"{BROKER_DIR}/")}
    in_the_way = [what for what in [_database_exists(database_url)] if what] + [
        str(broker_dir / PurePosixPath(name).relative_to(BROKER_DIR)) for name in broker
        if (broker_dir / PurePosixPath(name).relative_to(BROKER_DIR)).exists()]
    if in_the_way and not force:
        shown = ", ".join(in_the_way[:3]) + (f" and {len(in_the_way) - 3} more"
                                             if len(in_the_way) > 3 else "")
        raise BackupError(f"restoring would overwrite {shown}; pass --force to replace them")
    database = files[manifest["database"]["file"]]
    if kind == "sqlite":
        target = Path(make_url(normalise_url(database_url)).database or "")
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in (target.with_name(target.name + "-wal"),
                      target.with_name(target.name + "-shm")):
            stale.unlink(missing_ok=True)  # the old database's journal is not the new one's
        _write(target, database, 0o600)
    else:
        with tempfile.NamedTemporaryFile(suffix=".pgdump") as dump:
            dump.write(database)
            dump.flush()
            plain, env = _libpq(database_url)
            _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
                  "--dbname", plain, dump.name], env, "restore the database")
    modes = {entry["path"]: entry["mode"] for entry in manifest["files"]}
    for name, data in broker.items():
        _write(broker_dir / PurePosixPath(name).relative_to(BROKER_DIR), data,
               modes.get(name, 0o600))
    migrate(database_url)
    return {"createdAt": manifest["createdAt"], "version": manifest.get("version"),
            "database": kind, "brokerFiles": len(broker)}


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.restoring")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o777)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(partial, mode & 0o777)
    os.replace(partial, path)

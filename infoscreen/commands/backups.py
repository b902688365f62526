"""`infoscreen backup` and `infoscreen restore` (core.backup)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from core.config import Settings
from infoscreen.commands.common import package_version


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from core.backup import BackupError, backup

    try:
        done = backup(settings.database_url, Path(settings.broker_dir), args.output,
                      force=args.force, version=package_version())
    except BackupError as exc:
        print(f"infoscreen backup: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {done.archive} ({done.database_kind} database and {done.files - 1} broker "
          f"files, {done.bytes} bytes; mode 0600: it holds the CA key and the password "
          "hashes, keep it as safe as the server)")
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    from core.backup import BackupError, restore
    from migrations.runner import upgrade

    try:
        done = restore(args.archive, settings.database_url, Path(settings.broker_dir),
                       migrate=upgrade, force=args.force)
    except BackupError as exc:
        print(f"infoscreen restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored the backup of {done['createdAt']} ({done['database']} database, migrated "
          f"to the current schema; {done['brokerFiles']} broker files in "
          f"{settings.broker_dir}). Start the stack again, or reload the broker "
          "(SIGHUP) if it runs.")
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("backup", cmd_backup, "write a backup while everything runs: the database and "
            "the broker's accounts, passwords, ACL, config, CA and certificates")
    p.add_argument("--output", type=Path, required=True, metavar="FILE",
                   help="the archive to write (tar.gz, mode 0600)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p = add("restore", cmd_restore, "restore a backup (its checksums checked first) and "
            "migrate the database to the current schema")
    p.add_argument("archive", type=Path, metavar="FILE", help="a file written by backup")
    p.add_argument("--force", action="store_true",
                   help="replace the database and broker files that exist")

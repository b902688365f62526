"""What several command groups share."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

from core.config import Settings
from core.db import make_engine, make_session_factory


def open_session(settings: Settings):

    # Operator tools never create a database: a typo in DATABASE_URL must not leave an empty
    # SQLite file behind (DatabaseMissing, said in main).
    return make_session_factory(make_engine(settings.database_url, create=False))()


def read_password(args: argparse.Namespace) -> str | None:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\r\n")
    return args.password


def password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password", help="use this password instead of generating one "
                       "(visible in the process list: prefer --password-stdin)")
    group.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")


def package_version() -> str:
    try:
        return importlib.metadata.version("infoscreen-fleet")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"

"""`infoscreen`: the command line of the backend. Run `infoscreen --help`."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from core.config import ConfigError, load_settings
from core.db import DatabaseMissing, normalise_url
from core.logs import configure_logging
from infoscreen.commands import GROUPS
from infoscreen.commands.common import package_version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infoscreen",
        description="Watch and command a fleet of MQTT infoscreens. Settings come from the "
        "environment and .env (see .env.example).",
    )
    parser.add_argument("--env-file", help="read settings from this file instead of .env")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable | None, help_: str, **kw) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, **kw)
        p.set_defaults(func=func)
        return p

    for group in GROUPS:
        group.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(dotenv_path=Path(args.env_file) if args.env_file else None)
    except ConfigError as exc:
        print(f"infoscreen: configuration error: {exc}", file=sys.stderr)
        return 2
    # The process's name in every log line ("listener", "scheduler"; its workers name theirs).
    multiprocessing.current_process().name = args.command
    configure_logging(settings.log_level, settings.log_format)
    try:
        return args.func(settings, args)
    except DatabaseMissing as exc:
        print(f"infoscreen: {exc}; create it with `infoscreen migrate`", file=sys.stderr)
    except (OperationalError, ProgrammingError) as exc:
        print(f"infoscreen: {database_problem(settings.database_url, exc)}", file=sys.stderr)
    except BrokenPipeError:  # `infoscreen clients | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 1


def database_problem(url: str, exc: Exception) -> str:
    """One line on a database error: where (host or file, never the password) and what."""
    parsed = make_url(normalise_url(url))
    where = parsed.database if parsed.get_backend_name() == "sqlite" else (
        f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database}")
    first = (str(getattr(exc, "orig", exc)).strip().splitlines() or ["?"])[0][:200]
    if "no such table" in first or "does not exist" in first and "relation" in first:
        return f"the database at {where} is not migrated ({first}); run `infoscreen migrate`"
    return f"cannot use the database at {where}: {first}"

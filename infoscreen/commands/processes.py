"""The long-running processes and the quick start: listener, scheduler, web server,
migrations, simulator, dev stack."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from core.config import Settings


def cmd_listener(settings: Settings, _args: argparse.Namespace) -> int:
    from listener.service import run

    return run(settings)


def cmd_scheduler(settings: Settings, _args: argparse.Namespace) -> int:
    from scheduler.service import run

    run(settings)
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    bind = args.bind or settings.server_bind
    workers = str(args.workers or settings.server_workers)
    argv = [
        sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", workers,
        "--config", "python:server.gunicorn_conf", "--graceful-timeout", "10",
        "server:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - gunicorn replaces this process
    return 0  # not reached


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from core.db import describe_url
    from migrations import runner as migrate

    if args.check:
        migrate.check(settings.database_url)
        print("models and migrations agree")
        return 0
    migrate.upgrade(settings.database_url, args.revision)
    print(f"database {describe_url(settings.database_url)} is at {args.revision}")
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from simulator.cli import main

    return main(settings, args)


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from infoscreen.dev import run_dev

    return run_dev(settings, args)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    add("listener", cmd_listener, "run the MQTT listener: store every device message")
    add("scheduler", cmd_scheduler, "run the scheduler's periodic jobs")
    p = add("serve", cmd_serve, "run the web server (gunicorn) with the REST API and panels")
    p.add_argument("--bind", help="address:port (default SERVER_BIND)")
    p.add_argument("--workers", type=int, help="gunicorn workers (default SERVER_WORKERS)")
    p = add("migrate", cmd_migrate, "bring the database schema up to date (Alembic)")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.add_argument("--check", action="store_true",
                   help="only check that the models and the migrations agree")

    p = add("simulate", cmd_simulate, "run simulated infoscreens, or a load generator")
    from simulator.cli import add_arguments

    add_arguments(p)

    p = add("dev", cmd_dev, "set up and run the whole stack in the foreground (quick start)")
    p.add_argument("--clients", type=int, default=10, help="simulated screens (default 10)")
    p.add_argument("--no-simulator", action="store_true", help="run without simulated screens")
    p.add_argument("--mqtt-port", type=int,
                   help="broker TLS port for devices and monitors (default: 8884, or a free one)")
    p.add_argument("--service-port", type=int,
                   help="broker TLS port for the stack's own processes (default: 8885, or a "
                   "free one)")
    p.add_argument("--web-port", type=int, help="web port (default: 8080, or a free one)")

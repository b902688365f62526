"""`infoscreen`: the command line of the backend. Run `infoscreen --help`."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core.clock import utc_now
from core.config import ConfigError, Settings, load_settings

log = logging.getLogger("infoscreen")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


# Process commands


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
        "--access-logfile", "-", "--graceful-timeout", "10", "server:create_app()",
    ]
    os.execv(sys.executable, argv)  # noqa: S606 - gunicorn replaces this process
    return 0  # not reached


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from core import migrate
    from core.db import describe_url

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


# Operator tools


def _session(settings: Settings):
    from core.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings.database_url))()


def cmd_clients(settings: Settings, args: argparse.Namespace) -> int:
    from core.fleet import age_text, client_summary, list_clients

    now = utc_now()
    with _session(settings) as session:
        rows = [
            client_summary(c, now, settings.heartbeat_stale_seconds,
                           settings.heartbeat_down_seconds)
            for c in list_clients(session)
        ]
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    header = ("UUID", "HOSTNAME", "STATUS", "LAST SEEN", "PROCESS", "RECONNECTS", "ALERT")
    table = [header] + [
        (
            r["uuid"],
            r["hostname"] or "-",
            r["status"],
            age_text(r["lastSeenSecondsAgo"]),
            r["processStatus"] or "-",
            "-" if r["mqttReconnectCount"] is None else str(r["mqttReconnectCount"]),
            r["serviceFailed"]["unit"] if r["serviceFailedOpen"] else "-",
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(rows)} clients")
    return 0


def cmd_rejections(settings: Settings, args: argparse.Namespace) -> int:
    from core.fleet import rejection_counts

    with _session(settings) as session:
        rows = [
            {"reason": r.reason, "count": r.count, "lastAt": r.last_at.isoformat(),
             "lastTopic": r.last_topic, "lastDetail": r.last_detail}
            for r in rejection_counts(session)
        ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no message has been rejected")
    for r in rows:
        print(f"{r['reason']:<20} {r['count']:>10}  last {r['lastAt']} on {r['lastTopic']}")
        print(f"{'':<20} {'':>10}  {r['lastDetail']}")
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\r\n")
    return args.password


def _add_account(settings: Settings, username: str, role: str, args: argparse.Namespace) -> int:
    from mosquitto.accounts import AccountError, AccountStore, reload_broker

    store = AccountStore(settings.broker_dir, settings.mqtt_topic_prefix)
    given = _read_password(args)
    try:
        password = store.add(username, role, given)
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{role} account {username!r} written to {store.password_file} and {store.acl_file}")
    if given is None:
        print(f"password (shown once, store it now): {password}")
    if reload_broker(settings.broker_dir / "mosquitto.pid"):
        print("the running broker reloaded its logins and ACL")
    else:
        print(f"no broker is running from {settings.broker_dir}; it reads the login when it starts")
    return 0


def cmd_device_add(settings: Settings, args: argparse.Namespace) -> int:
    return _add_account(settings, args.uuid, "device", args)


def cmd_monitor_add(settings: Settings, args: argparse.Namespace) -> int:
    return _add_account(settings, args.name, "monitor", args)


def cmd_account_add(settings: Settings, args: argparse.Namespace) -> int:
    return _add_account(settings, args.name, args.role, args)


def cmd_account_remove(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.accounts import AccountError, AccountStore, reload_broker

    try:
        AccountStore(settings.broker_dir, settings.mqtt_topic_prefix).remove(args.name)
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reloaded = reload_broker(settings.broker_dir / "mosquitto.pid")
    print(f"removed {args.name!r}" + ("; the broker reloaded" if reloaded else ""))
    return 0


def cmd_account_list(settings: Settings, _args: argparse.Namespace) -> int:
    from mosquitto.accounts import AccountStore

    accounts = AccountStore(settings.broker_dir).load()
    for account in sorted(accounts.values(), key=lambda a: (a.role, a.username)):
        print(f"{account.role:<10} {account.username}")
    print(f"{len(accounts)} accounts in {settings.broker_dir}")
    return 0


def cmd_broker_config(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.config import BrokerConfig, Listener, write_config

    if args.address not in ("127.0.0.1", "::1", "localhost") and not args.yes_plain_on_network:
        print(
            "error: a plain (non-TLS) listener is only generated on a loopback address; "
            "pass --yes-plain-on-network to bind "
            f"{args.address} anyway",
            file=sys.stderr,
        )
        return 2
    config = BrokerConfig(
        settings.broker_dir,
        (Listener(args.port or settings.mqtt_port, args.address, "plain MQTT"),),
        max_queued_messages=args.max_queued_messages,
        run_as_user=args.run_as or getpass.getuser(),
        log_dest=args.log_dest,
    )
    print(f"wrote {write_config(config)}")
    return 0


def _cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def _staff_change(settings: Settings, change: Callable) -> tuple[bool, object]:
    """Run change(session) in one transaction; a refusal becomes one line on stderr."""
    from core.staff import StaffError

    try:
        with _session(settings) as session, session.begin():
            return True, change(session)
    except StaffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False, None


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import add_user, generate_password

    given = _read_password(args)
    password = given or generate_password()
    ok, _ = _staff_change(settings, lambda session: add_user(
        session, args.name, args.role, password, now=utc_now(), actor=_cli_actor()))
    if not ok:
        return 2
    print(f"user {args.name!r} can sign in with role {args.role}")
    if given is None:
        print(f"password (shown once, store it now): {password}")
    return 0


def cmd_user_list(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from core.models import User

    with _session(settings) as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        for user in users:
            state = "disabled" if user.disabled_at else "active"
            last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "-"
            print(f"{user.username:<24} {user.role:<9} {state:<9} last sign-in {last}")
    print(f"{len(users)} users")
    return 0


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import create_token

    name = args.name or f"script-{args.role}"
    ok, token = _staff_change(settings, lambda session: create_token(
        session, name, args.role, now=utc_now(), actor=_cli_actor()))
    if not ok:
        return 2
    print(f"API token {name!r} with role {args.role}; send it as "
          "'Authorization: Bearer <token>'")
    print(f"token (shown once, store it now): {token}")
    return 0


def cmd_token_list(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from core.models import ApiToken

    with _session(settings) as session:
        tokens = session.scalars(select(ApiToken).order_by(ApiToken.created_at)).all()
        for t in tokens:
            state = "revoked" if t.revoked_at else "active"
            print(f"{t.id}  {t.name:<24} {t.role:<9} {state:<8} by {t.created_by}")
    print(f"{len(tokens)} tokens")
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import revoke_token

    ok, _ = _staff_change(settings, lambda session: revoke_token(
        session, args.id, now=utc_now(), actor=_cli_actor()))
    if not ok:
        return 2
    print(f"revoked API token {args.id}")
    return 0


def cmd_compose_init(settings: Settings, args: argparse.Namespace) -> int:
    from infoscreen.compose import init_compose

    return init_compose(args, settings.mqtt_topic_prefix)


# Parser


def _password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password", help="use this password instead of generating one "
                       "(visible in the process list: prefer --password-stdin)")
    group.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infoscreen",
        description="Watch and command a fleet of MQTT infoscreens. Settings come from the "
        "environment and .env (see .env.example).",
    )
    parser.add_argument("--env-file", help="read settings from this file instead of .env")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_: str, **kw) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, **kw)
        p.set_defaults(func=func)
        return p

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
    p.add_argument("--mqtt-port", type=int, help="broker port (default: 1884, or a free one)")
    p.add_argument("--web-port", type=int, help="web port (default: 8080, or a free one)")

    p = add("clients", cmd_clients, "list the clients with their state")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--status", choices=("alive", "stale", "down"),
                   help="only clients in this state")
    p = add("rejections", cmd_rejections, "show how many device messages were refused, by reason")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = add("device", None, "provision device logins on the broker")
    dsub = p.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    d = dsub.add_parser("add", help="create (or reset) the broker login of a device",
                        description="Create or reset the broker login of a device: username = "
                        "its uuid. Prints the password once; reloads a running broker.")
    d.add_argument("uuid", help="the device's uuid, as it uses in its topics")
    _password_options(d)
    d.set_defaults(func=cmd_device_add)
    d = dsub.add_parser("remove", help="delete a device's broker login")
    d.add_argument("name", metavar="uuid")
    d.set_defaults(func=cmd_account_remove)

    p = add("monitor", None, "provision read-only logins for external monitors")
    msub = p.add_subparsers(dest="monitor_command", required=True, metavar="ACTION")
    m = msub.add_parser("add", help="create (or reset) a read-only monitor login",
                        description="Create or reset a monitor login: it may read "
                        "monitoring/# and client telemetry and publish nothing.")
    m.add_argument("name")
    _password_options(m)
    m.set_defaults(func=cmd_monitor_add)
    m = msub.add_parser("remove", help="delete a monitor login")
    m.add_argument("name")
    m.set_defaults(func=cmd_account_remove)

    p = add("broker", None, "generate the Mosquitto config and manage broker accounts")
    bsub = p.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    b = bsub.add_parser("config", help="write mosquitto.conf into BROKER_DIR")
    b.add_argument("--port", type=int, help="listener port (default MQTT_PORT)")
    b.add_argument("--address", default="127.0.0.1", help="listener address (default 127.0.0.1)")
    b.add_argument("--yes-plain-on-network", action="store_true",
                   help="allow a plain listener on a non-loopback address (until TLS is set up)")
    b.add_argument("--max-queued-messages", type=int, default=100_000,
                   help="per-client QoS 1 queue; size it above the fleet's burst (default 100000)")
    b.add_argument("--run-as", help="user Mosquitto switches to when started as root")
    b.add_argument("--log-dest", default="stderr", help="Mosquitto log_dest (default stderr)")
    b.set_defaults(func=cmd_broker_config)
    b = bsub.add_parser("add-account", help="create (or reset) an account with any role")
    b.add_argument("name")
    b.add_argument("--role", required=True, choices=("server", "device", "monitor", "simulator"))
    _password_options(b)
    b.set_defaults(func=cmd_account_add)
    b = bsub.add_parser("remove-account", help="delete an account")
    b.add_argument("name")
    b.set_defaults(func=cmd_account_remove)
    b = bsub.add_parser("accounts", help="list the accounts and their roles")
    b.set_defaults(func=cmd_account_list)

    roles = ("viewer", "operator", "admin")
    p = add("user", None, "manage the staff who sign in to the web app")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    u = usub.add_parser("add", help="create a user, or reset a user's password and role",
                        description="Create a staff user, or reset the password and role of an "
                        "existing one. Roles: viewer < operator < admin. Prints a generated "
                        "password once unless one is given.")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=roles)
    _password_options(u)
    u.set_defaults(func=cmd_user_add)
    u = usub.add_parser("list", help="list the users and their roles")
    u.set_defaults(func=cmd_user_list)

    p = add("token", None, "manage API tokens for scripts")
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = tsub.add_parser("create", help="create an API token (printed once)",
                        description="Create an API token for scripts, sent as "
                        "'Authorization: Bearer <token>'. Only its hash is stored.")
    t.add_argument("--name", help="what the token is for, e.g. zabbix (default: script-ROLE)")
    t.add_argument("--role", required=True, choices=roles)
    t.set_defaults(func=cmd_token_create)
    t = tsub.add_parser("list", help="list the API tokens")
    t.set_defaults(func=cmd_token_list)
    t = tsub.add_parser("revoke", help="revoke an API token by its id")
    t.add_argument("id")
    t.set_defaults(func=cmd_token_revoke)

    p = add("compose", None, "prepare the files docker-compose.yml mounts")
    csub = p.add_subparsers(dest="compose_command", required=True, metavar="ACTION")
    c = csub.add_parser("init", help="write var/compose/: secrets, broker config, logins",
                        description="Write var/compose/secrets (database, MQTT and session "
                        "secrets, kept when they exist) and var/compose/broker (mosquitto.conf, "
                        "password file, ACL) for `docker compose up`.")
    c.add_argument("--max-queued-messages", type=int, default=100_000,
                   help="per-client QoS 1 queue of the broker (default 100000)")
    c.set_defaults(func=cmd_compose_init)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(dotenv_path=Path(args.env_file) if args.env_file else None)
    except ConfigError as exc:
        print(f"infoscreen: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return args.func(settings, args)

"""`infoscreen`: the command line of the backend. Run `infoscreen --help`."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from core.clock import utc_now
from core.config import ConfigError, Settings, load_settings
from core.db import DatabaseMissing, normalise_url
from core.logs import configure_logging

log = logging.getLogger("infoscreen")


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


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from simulator.cli import main

    return main(settings, args)


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from infoscreen.dev import run_dev

    return run_dev(settings, args)


# Operator tools


def _session(settings: Settings):
    from core.db import make_engine, make_session_factory

    # Operator tools never create a database: a typo in DATABASE_URL must not leave an empty
    # SQLite file behind (DatabaseMissing, said in main).
    return make_session_factory(make_engine(settings.database_url, create=False))()


def cmd_clients(settings: Settings, args: argparse.Namespace) -> int:
    from core.fleet import age_text, client_summary, list_clients

    now = utc_now()
    with _session(settings) as session:
        rows = [
            client_summary(c, now, settings.heartbeat_stale_seconds,
                           settings.heartbeat_down_seconds, settings.default_supported_actions)
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

    store = AccountStore(settings.broker_dir, settings.mqtt_topic_prefix)
    role = getattr(args, "role", None)  # device/monitor remove: only logins of that role
    found = store.load().get(args.name)
    if role and found is not None and found.role != role:
        how = (f"{found.role} remove" if found.role in ("device", "monitor")
               else "broker remove-account")
        print(f"error: {args.name!r} is a {found.role} login, not a {role}; remove it with "
              f"`infoscreen {how}`", file=sys.stderr)
        return 2
    try:
        store.remove(args.name)
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reloaded = reload_broker(settings.broker_dir / "mosquitto.pid")
    print(f"removed {args.name!r}" + ("; the broker reloaded" if reloaded else ""))
    return 0


def cmd_account_list(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.accounts import AccountStore

    role = getattr(args, "role", None)  # device/monitor list: only that role
    accounts = [a for a in AccountStore(settings.broker_dir).load().values()
                if role is None or a.role == role]
    for account in sorted(accounts, key=lambda a: (a.role, a.username)):
        print(account.username if role else f"{account.role:<10} {account.username}")
    print(f"{len(accounts)} {role + ' logins' if role else 'accounts'} in {settings.broker_dir}")
    return 0


def broker_listeners(settings: Settings, args: argparse.Namespace) -> tuple:
    """The listeners `broker config` generates; raises mosquitto.config.ConfigError."""
    from mosquitto.config import Listener, tls_files

    tls = tls_files(settings.broker_dir / "certs")
    tls_port = args.tls_port or settings.broker_tls_port
    address = args.tls_address or settings.broker_tls_address
    listeners = [
        Listener(args.service_port or settings.broker_service_port,
                 args.service_address or settings.broker_service_address,
                 "TLS: the backend's services (server and simulator accounts)", tls=tls,
                 services=True),
        Listener(tls_port, address, "TLS: devices and monitors with a password", tls=tls),
    ]
    mtls_port = settings.broker_mtls_port if args.mtls_port is None else args.mtls_port
    if mtls_port:
        listeners.append(Listener(mtls_port, address, "mutual TLS: devices log in with their "
                                  "certificate (CN = uuid)", tls=tls, require_certificate=True))
    if (args.plain or settings.mqtt_plain_listener) == "loopback":
        listeners.append(Listener(args.plain_port, args.plain_address,
                                  "plain MQTT on loopback, for a staged migration of devices "
                                  "to TLS (MQTT_PLAIN_LISTENER=loopback)"))
    return tuple(listeners)


def cmd_broker_config(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.accounts import AccountStore
    from mosquitto.config import BrokerConfig, write_config
    from mosquitto.config import ConfigError as BrokerConfigError

    try:
        listeners = broker_listeners(settings, args)
        config = BrokerConfig(
            settings.broker_dir,
            listeners,
            max_queued_messages=args.max_queued_messages or settings.broker_max_queued_messages,
            max_queued_bytes=settings.broker_max_queued_bytes,
            max_packet_bytes=settings.broker_max_packet_bytes,
            run_as_user=args.run_as or getpass.getuser(),
            log_dest=args.log_dest,
        )
        written = write_config(config)
    except BrokerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    for listener in listeners:
        print(f"  listener {listener.address}:{listener.port}  {listener.comment}")
    store = AccountStore(settings.broker_dir, settings.mqtt_topic_prefix)
    if store.registry.exists():
        store.save(store.load())  # the password file and the ACL follow this version's rules
        print(f"wrote {store.password_file}, {store.service_password_file} and "
              f"{store.acl_file}")
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


def _user_change(settings: Settings, change: Callable, *args: object) -> tuple[bool, object]:
    """Run change(session, *args) from core.staff as this command line's user."""
    return _staff_change(settings, lambda session: change(
        session, *args, now=utc_now(), actor=_cli_actor()))


def _print_password(given: str | None, password: str) -> None:
    if given is None:
        print(f"password (shown once, store it now): {password}")


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import add_user, generate_password

    if _user_exists(settings, args.name):
        # Adding never resets: a new password or role, and enabling, each end old sessions
        # and are audited as what they are.
        print(f"error: user {args.name!r} already exists; nothing was changed. For a new "
              f"password: infoscreen user passwd {args.name}; to let a disabled user sign in "
              f"again: infoscreen user enable {args.name}; for another role: infoscreen user "
              f"role {args.name} --role ROLE", file=sys.stderr)
        return 2
    given = _read_password(args)
    password = given or generate_password()
    ok, _ = _user_change(settings, add_user, args.name, args.role, password)
    if not ok:
        return 2
    print(f"user {args.name!r} can sign in with role {args.role}")
    _print_password(given, password)
    return 0


def _user_exists(settings: Settings, username: str) -> bool:
    from sqlalchemy import select

    from core.models import User

    with _session(settings) as session:
        return session.scalar(select(User.id).where(User.username == username)) is not None


def cmd_user_passwd(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import generate_password, set_password

    given = _read_password(args)
    password = given or generate_password()
    ok, _ = _user_change(settings, set_password, args.name, password)
    if not ok:
        return 2
    print(f"user {args.name!r} has a new password; every session they had has ended")
    _print_password(given, password)
    return 0


def _report_user_change(settings: Settings, change: Callable, args: tuple, done: str,
                        unchanged: str) -> int:
    """Run a user change that may find nothing to do, and say which happened."""
    ok, changed = _user_change(settings, change, *args)
    if not ok:
        return 2
    print(done if changed else unchanged)
    return 0


def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import disable_user

    return _report_user_change(
        settings, disable_user, (args.name,),
        f"user {args.name!r} is disabled: every session they had has ended and they cannot "
        "sign in",
        f"user {args.name!r} was already disabled; nothing was changed")


def cmd_user_remove(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import remove_user

    ok, _ = _user_change(settings, remove_user, args.name)
    if not ok:
        return 2
    print(f"removed user {args.name!r}; their sessions have ended (the audit log keeps the "
          "name)")
    return 0


def cmd_user_enable(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import enable_user

    return _report_user_change(
        settings, enable_user, (args.name,),
        f"user {args.name!r} can sign in again (sessions from before stay ended)",
        f"user {args.name!r} is not disabled; nothing was changed")


def cmd_user_role(settings: Settings, args: argparse.Namespace) -> int:
    from core.staff import set_role

    return _report_user_change(
        settings, set_role, (args.name, args.role),
        f"user {args.name!r} has role {args.role}; every session they had has ended, they "
        "sign in again to use it",
        f"user {args.name!r} already has role {args.role}; nothing was changed")


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

    return init_compose(args, settings)


def _certs_dir(settings: Settings, args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else settings.broker_dir / "certs"


def _certs_run(action: Callable[[], object]) -> tuple[bool, object]:
    """Run a certificate operation; a refusal becomes one line on stderr."""
    from mosquitto.certs import CertError

    try:
        return True, action()
    except CertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False, None


def _certs_reload(settings: Settings, what: str) -> None:
    from mosquitto.accounts import reload_broker

    if reload_broker(settings.broker_dir / "mosquitto.pid"):
        print(f"the running broker reloaded {what} (SIGHUP); connected clients stay connected")
    else:
        print(f"no broker is running from {settings.broker_dir}; it reads {what} when it starts")


def _print_issued(issued, what: str) -> None:
    print(f"wrote {what}: {issued.cert_path} (key {issued.key_path}, mode 0600)")
    print(f"  subject {issued.subject}")
    if issued.sans:
        print(f"  names   {', '.join(issued.sans)}")
    print(f"  valid   {issued.not_before:%Y-%m-%d %H:%M} to {issued.not_after:%Y-%m-%d %H:%M} UTC")
    if issued.limited_by_ca:
        print("  note: cut short to the CA's own end of validity; roll the CA over "
              "(infoscreen certs rollover-ca) well before then")
    if issued.dropped_sans:
        print(f"  no longer covers: {', '.join(issued.dropped_sans)}")


def cmd_certs_init_ca(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.certs import init_ca

    directory = _certs_dir(settings, args)
    ok, issued = _certs_run(lambda: init_ca(
        directory, common_name=args.common_name, days=args.days, key_type=args.key_type,
        force=args.force))
    if not ok:
        return 2
    _print_issued(issued, "the CA")
    print(f"clients and the broker trust {directory / 'ca-bundle.crt'}")
    if args.force:
        print("certificates signed by a replaced CA are no longer trusted: issue them again")
    print("next: infoscreen certs issue-server --dns BROKER_HOST_NAME --ip BROKER_ADDRESS")
    return 0


def cmd_certs_issue_server(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.certs import issue_server

    ok, issued = _certs_run(lambda: issue_server(
        _certs_dir(settings, args), dns_names=args.dns, ips=args.ip, days=args.days,
        key_type=args.key_type, force=args.force))
    if not ok:
        return 2
    _print_issued(issued, "the server certificate")
    _certs_reload(settings, "its certificate")
    return 0


def cmd_certs_rotate_server(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.certs import rotate_server

    ok, issued = _certs_run(lambda: rotate_server(
        _certs_dir(settings, args), days=args.days, key_type=args.key_type))
    if not ok:
        return 2
    _print_issued(issued, "a new server key and certificate")
    _certs_reload(settings, "its certificate")
    return 0


def cmd_certs_issue_client(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.certs import issue_client

    directory = _certs_dir(settings, args)
    ok, issued = _certs_run(lambda: issue_client(
        directory, args.uuid, days=args.days, key_type=args.key_type))
    if not ok:
        return 2
    _print_issued(issued, f"the certificate of device {args.uuid}")
    print(f"copy to the device: {issued.cert_path}, {issued.key_path} (keep it secret) and "
          f"{directory / 'ca-bundle.crt'}")
    return 0


def _certs_bundle_changed(settings: Settings) -> None:
    # Mosquitto reads its cafile only at start: a SIGHUP would not pick the bundle up.
    print(f"restart the broker (not a reload: Mosquitto reads the CA bundle only when it "
          f"starts) so that it trusts the new bundle, e.g. the mosquitto process of "
          f"{settings.broker_dir}")


def cmd_certs_rollover_ca(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.certs import rollover_ca

    directory = _certs_dir(settings, args)
    ok, issued = _certs_run(lambda: rollover_ca(
        directory, common_name=args.common_name, days=args.days, key_type=args.key_type))
    if not ok:
        return 2
    _print_issued(issued, "the new CA")
    print(f"{directory / 'ca-bundle.crt'} now trusts the new and the previous CA "
          "(kept as ca-previous.crt)")
    _certs_bundle_changed(settings)
    print("next: 1. give every client and the backend (MQTT_TLS_CA_CERT) the new ca-bundle.crt")
    print("      2. infoscreen certs rotate-server; infoscreen certs issue-client UUID for "
          "devices with certificates")
    print("      3. infoscreen certs finish-rollover, then hand out ca-bundle.crt once more")
    return 0


def cmd_certs_finish_rollover(settings: Settings, args: argparse.Namespace) -> int:
    from mosquitto.certs import finish_rollover

    directory = _certs_dir(settings, args)
    ok, stale = _certs_run(lambda: finish_rollover(directory, force=args.force))
    if not ok:
        return 2
    print(f"{directory / 'ca-bundle.crt'} trusts the current CA only; ca-previous.crt removed")
    for path in stale:
        print(f"no longer trusted: {path}")
    _certs_bundle_changed(settings)
    print("next: hand out the new ca-bundle.crt to the clients and the backend")
    return 0


def cmd_certs_check(settings: Settings, args: argparse.Namespace) -> int:
    import dataclasses

    from mosquitto.certs import check

    report = check(_certs_dir(settings, args), utc_now())
    if args.json:
        data = dataclasses.asdict(report)
        data["errors"], data["warnings"] = len(report.errors), len(report.warnings)
        json.dump(data, sys.stdout, indent=2, default=str)
        print()
        return 1 if report.errors else 0
    print(f"certificates in {report.directory}")
    table = [("ROLE", "NAMES", "VALID UNTIL (UTC)", "DAYS", "STATE")] + [
        (
            c.role,
            ", ".join(s for s in c.sans if not s.startswith("urn:"))
            if c.role == "server" else c.common_name or c.subject,
            f"{c.not_after:%Y-%m-%d %H:%M}",
            str(c.days_left),
            c.level,
        )
        for c in report.certificates
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if report.rollover_in_progress:
        print("a CA rollover is in progress: ca-bundle.crt trusts the current and the previous CA")
    for cert, problem in report.all_problems:
        where = f"{cert.role} {cert.path.name}" if cert else str(report.directory)
        print(f"{problem.level}: {where}: {problem.message}")
    print(f"{len(report.certificates)} certificates, {len(report.errors)} errors, "
          f"{len(report.warnings)} warnings")
    return 1 if report.errors else 0


# Parser


def _password_options(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infoscreen",
        description="Watch and command a fleet of MQTT infoscreens. Settings come from the "
        "environment and .env (see .env.example).",
    )
    parser.add_argument("--env-file", help="read settings from this file instead of .env")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
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
    d = dsub.add_parser("list", help="list the devices' broker logins")
    d.set_defaults(func=cmd_account_list, role="device")
    d = dsub.add_parser("remove", help="delete a device's broker login")
    d.add_argument("name", metavar="uuid")
    d.set_defaults(func=cmd_account_remove, role="device")

    p = add("monitor", None, "provision read-only logins for external monitors")
    msub = p.add_subparsers(dest="monitor_command", required=True, metavar="ACTION")
    m = msub.add_parser("add", help="create (or reset) a read-only monitor login",
                        description="Create or reset a monitor login: it may read "
                        "monitoring/# and client telemetry and publish nothing.")
    m.add_argument("name")
    _password_options(m)
    m.set_defaults(func=cmd_monitor_add)
    m = msub.add_parser("list", help="list the monitor logins")
    m.set_defaults(func=cmd_account_list, role="monitor")
    m = msub.add_parser("remove", help="delete a monitor login")
    m.add_argument("name")
    m.set_defaults(func=cmd_account_remove, role="monitor")

    p = add("broker", None, "generate the Mosquitto config and manage broker accounts")
    bsub = p.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    b = bsub.add_parser(
        "config", help="write mosquitto.conf into BROKER_DIR",
        description="Write BROKER_DIR/mosquitto.conf with the certificates in BROKER_DIR/certs "
        "(make them first: infoscreen certs init-ca; infoscreen certs issue-server --dns NAME "
        "--ip ADDRESS): a TLS listener for devices and monitors (TLS 1.2 or newer, username "
        "and password; the client id is the username, shared subscriptions are refused), a "
        "TLS listener for the backend's services (BROKER_SERVICE_PORT, on loopback unless "
        "BROKER_SERVICE_ADDRESS says otherwise), optionally a mutual-TLS listener for devices "
        "(BROKER_MTLS_PORT) and, for a staged migration only, a plain listener on loopback "
        "(MQTT_PLAIN_LISTENER=loopback). No listener allows anonymous clients. Compiles the "
        "broker plugin that refuses shared subscriptions (needs a C compiler and Mosquitto's "
        "plugin headers).")
    b.add_argument("--tls-port", type=int,
                   help="devices' TLS listener port (default BROKER_TLS_PORT, 8883)")
    b.add_argument("--service-port", type=int,
                   help="services' TLS listener port (default BROKER_SERVICE_PORT, 8885)")
    b.add_argument("--service-address",
                   help="services' listener address (default BROKER_SERVICE_ADDRESS, 127.0.0.1)")
    b.add_argument("--tls-address",
                   help="address of the TLS listeners (default BROKER_TLS_ADDRESS, 0.0.0.0)")
    b.add_argument("--mtls-port", type=int,
                   help="mutual-TLS listener port for devices with certificates; 0: none "
                   "(default BROKER_MTLS_PORT, 0)")
    b.add_argument("--plain", choices=("off", "loopback"),
                   help="plain listener for a staged migration (default MQTT_PLAIN_LISTENER, off)")
    b.add_argument("--plain-port", type=int, default=1883,
                   help="plain listener port (default 1883)")
    b.add_argument("--plain-address", default="127.0.0.1",
                   help="plain listener address: loopback only (default 127.0.0.1)")
    b.add_argument("--max-queued-messages", type=int,
                   help="per-client QoS 1 queue; size it for the longest listener or database "
                   "outage to survive (default BROKER_MAX_QUEUED_MESSAGES, 1000000)")
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
    u = usub.add_parser("add", help="create a user (refuses an existing one)",
                        description="Create a staff user. Roles: viewer < operator < admin. "
                        "Prints a generated password once unless one is given. Refuses a user "
                        "that exists (exit status 2, nothing changed): use `user passwd`, "
                        "`user enable` or `user role` for them.")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=roles)
    _password_options(u)
    u.set_defaults(func=cmd_user_add)
    u = usub.add_parser("passwd", help="give a user a new password; ends their sessions",
                        description="Give a staff user a new password: prints a generated one "
                        "once unless one is given. Every session the user signed in to before "
                        "ends at once; the change is audited.")
    u.add_argument("name")
    _password_options(u)
    u.set_defaults(func=cmd_user_passwd)
    u = usub.add_parser("disable", help="stop a user signing in; ends their sessions",
                        description="Disable a staff user: they cannot sign in, and every "
                        "session they signed in to ends at once. Audited; `user enable` undoes "
                        "it. Their password and role are kept.")
    u.add_argument("name")
    u.set_defaults(func=cmd_user_disable)
    u = usub.add_parser("enable", help="let a disabled user sign in again",
                        description="Enable a disabled staff user: they can sign in again with "
                        "their password. Sessions from before they were disabled stay ended. "
                        "Audited.")
    u.add_argument("name")
    u.set_defaults(func=cmd_user_enable)
    u = usub.add_parser("remove", help="delete a user; ends their sessions",
                        description="Delete a staff user for good (`user disable` keeps them). "
                        "Their sessions end; the audit log keeps their name. Audited.")
    u.add_argument("name")
    u.set_defaults(func=cmd_user_remove)
    u = usub.add_parser("role", help="change a user's role; ends their sessions",
                        description="Give a staff user another role (viewer < operator < admin). "
                        "Every session they signed in to before ends at once, so the new role "
                        "applies from their next sign-in. Audited.")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=roles)
    u.set_defaults(func=cmd_user_role)
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
    t = tsub.add_parser("revoke", aliases=["remove"], help="revoke an API token by its id")
    t.add_argument("id")
    t.set_defaults(func=cmd_token_revoke)

    p = add("certs", None, "make and check the certificates of the broker's TLS (our own CA)")
    p.description = (
        "Make and check the certificates of the broker's TLS listener with the project's own "
        "CA. Files live in BROKER_DIR/certs unless --dir says otherwise: ca.crt, ca.key, "
        "ca-bundle.crt (what the broker and the clients trust), server.crt, server.key and "
        "clients/UUID.crt/.key. Keys are written 0600."
    )
    xsub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")

    def certs_action(name: str, func: Callable, help_: str, description: str,
                     days: int | None = None) -> argparse.ArgumentParser:
        x = xsub.add_parser(name, help=help_, description=description)
        x.add_argument("--dir", help="certificate directory (default BROKER_DIR/certs)")
        if days is not None:
            x.add_argument("--days", type=int, default=days,
                           help=f"validity in days (default {days})")
        x.set_defaults(func=func)
        return x

    def key_type(x: argparse.ArgumentParser, default: str | None = "ec") -> None:
        x.add_argument("--key-type", choices=("ec", "rsa"), default=default,
                       help="EC P-256 or RSA 3072 "
                       + ("(default ec)" if default else "(default: as before)"))

    from mosquitto.cert_defaults import CA_COMMON_NAME, CA_DAYS, CLIENT_DAYS, SERVER_DAYS

    x = certs_action("init-ca", cmd_certs_init_ca, "create the CA (once)",
                     "Create the CA that signs the broker's and the devices' certificates: "
                     "ca.crt, ca.key (0600) and ca-bundle.crt. Refuses to replace an existing "
                     "CA; on a live fleet use rollover-ca.", CA_DAYS)
    x.add_argument("--common-name", default=CA_COMMON_NAME,
                   help=f"the CA's name (default {CA_COMMON_NAME!r})")
    key_type(x)
    x.add_argument("--force", action="store_true",
                   help="replace an existing CA: everything it signed stops being trusted")
    x = certs_action("issue-server", cmd_certs_issue_server,
                     "issue the broker's certificate for its names and addresses",
                     "Issue server.crt and server.key from the CA, with the serverAuth usage "
                     "and a SAN for every host name and IP address clients use to reach the "
                     "broker. Reloads a running broker; clients need no change.", SERVER_DAYS)
    x.add_argument("--dns", action="extend", nargs="+", default=[], metavar="NAME",
                   help="a host name clients connect to (repeat, or give several)")
    x.add_argument("--ip", action="extend", nargs="+", default=[], metavar="ADDRESS",
                   help="an IP address clients connect to (repeat, or give several)")
    key_type(x)
    x.add_argument("--force", action="store_true",
                   help="drop names or addresses the current server certificate covers")
    x = certs_action("issue-client", cmd_certs_issue_client,
                     "issue a device's certificate for mutual TLS (CN = its uuid)",
                     "Issue clients/UUID.crt and .key from the CA, with the clientAuth usage "
                     "and CN = the device's uuid (its username on the broker). Issuing again "
                     "renews it.", CLIENT_DAYS)
    x.add_argument("uuid", help="the device's uuid, as it uses in its topics")
    key_type(x)
    x = certs_action("check", cmd_certs_check,
                     "show every certificate, its expiry and its problems",
                     "Show the CA, the server and every client certificate: names, expiry, "
                     "whether the CA bundle trusts it. Warns 30 days before an expiry, errs at "
                     "7 days, on an expired or not yet valid certificate, a missing usage or a "
                     "foreign key. Exit status 1 when there is an error.")
    x.add_argument("--json", action="store_true", help="print JSON for scripts")
    x = certs_action("rotate-server", cmd_certs_rotate_server,
                     "renew the broker's key and certificate with the same names",
                     "Make a new server key and certificate with the names and addresses of the "
                     "current one, from the current CA, and reload a running broker.",
                     SERVER_DAYS)
    key_type(x, default=None)
    x = certs_action("rollover-ca", cmd_certs_rollover_ca,
                     "start replacing the CA: the bundle trusts the old and the new one",
                     "Start a CA rollover: a new CA becomes ca.crt, the old one stays trusted "
                     "through ca-bundle.crt (and ca-previous.crt) until finish-rollover. Hand "
                     "the bundle to every client, then rotate-server and reissue client "
                     "certificates, then finish-rollover.", CA_DAYS)
    x.add_argument("--common-name", default=CA_COMMON_NAME,
                   help="the new CA's name (a number is added if the old CA has it)")
    key_type(x)
    x = certs_action("finish-rollover", cmd_certs_finish_rollover,
                     "end a CA rollover: stop trusting the previous CA",
                     "End a CA rollover: ca-bundle.crt trusts only the current CA. Refused "
                     "while the server or a client certificate is still signed by the previous "
                     "CA.")
    x.add_argument("--force", action="store_true",
                   help="stop trusting the previous CA even though certificates still need it")

    p = add("compose", None, "prepare the files docker-compose.yml mounts")
    csub = p.add_subparsers(dest="compose_command", required=True, metavar="ACTION")
    c = csub.add_parser("init", help="write var/compose/: secrets, certificates, broker config",
                        description="Write var/compose/secrets (database, MQTT and session "
                        "secrets, kept when they exist) and var/compose/broker (mosquitto.conf "
                        "with a TLS listener on 8883, password file, ACL, and certs/: a CA made "
                        "once and a server certificate for `mosquitto`, localhost and every "
                        "--dns/--ip) for `docker compose up`.")
    c.add_argument("--dns", action="extend", nargs="+", default=[], metavar="NAME",
                   help="a host name devices use to reach the broker (repeat, or give several)")
    c.add_argument("--ip", action="extend", nargs="+", default=[], metavar="ADDRESS",
                   help="an IP address devices use to reach the broker (repeat, or give several)")
    c.add_argument("--mtls-port", type=int, default=0,
                   help="also a mutual-TLS listener for devices with certificates on this port "
                   "(default: none)")
    c.add_argument("--max-queued-messages", type=int,
                   help="per-client QoS 1 queue of the broker (default "
                   "BROKER_MAX_QUEUED_MESSAGES, 1000000)")
    c.set_defaults(func=cmd_compose_init)
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

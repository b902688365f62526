"""The certificates of the broker's TLS, made with the project's own CA."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from core.clock import utc_now
from core.config import Settings


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


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
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

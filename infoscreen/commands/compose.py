"""`infoscreen compose init`: the files docker-compose.yml mounts (infoscreen.compose)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from core.config import Settings


def cmd_compose_init(settings: Settings, args: argparse.Namespace) -> int:
    from infoscreen.compose import init_compose

    return init_compose(args, settings)


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
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

"""The broker's logins (devices, monitors, any role) and its config."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from core.config import Settings
from infoscreen.commands.common import password_options, read_password


def _add_account(settings: Settings, username: str, role: str, args: argparse.Namespace) -> int:
    from mosquitto.accounts import AccountError, AccountStore, reload_broker

    store = AccountStore(settings.broker_dir, settings.mqtt_topic_prefix)
    given = read_password(args)
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


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("device", None, "provision device logins on the broker")
    dsub = p.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    d = dsub.add_parser("add", help="create (or reset) the broker login of a device",
                        description="Create or reset the broker login of a device: username = "
                        "its uuid. Prints the password once; reloads a running broker.")
    d.add_argument("uuid", help="the device's uuid, as it uses in its topics")
    password_options(d)
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
    password_options(m)
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
    password_options(b)
    b.set_defaults(func=cmd_account_add)
    b = bsub.add_parser("remove-account", help="delete an account")
    b.add_argument("name")
    b.set_defaults(func=cmd_account_remove)
    b = bsub.add_parser("accounts", help="list the accounts and their roles")
    b.set_defaults(func=cmd_account_list)

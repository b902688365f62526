"""`infoscreen dev`: set up and run the whole stack in the foreground.

Broker config and logins, database migrated, then Mosquitto, listener, scheduler, web server
and a small simulated fleet under one supervisor (honcho): Ctrl-C stops them all. The broker
listens with TLS only (on loopback), with a CA and a server certificate for localhost made on
the first run; every process of the stack connects with TLS. The generated settings go to
var/dev.env and are reused on the next run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import socket
import sys
import uuid
from pathlib import Path

from dotenv import dotenv_values

from core.clock import utc_now
from core.config import Settings
from core.db import describe_url, make_engine, make_session_factory
from core.files import write_private
from core.staff import ensure_user
from core.staff import generate_password as staff_password
from migrations import runner as migrate
from mosquitto import certs
from mosquitto.accounts import AccountStore, generate_password
from mosquitto.config import BrokerConfig, Listener, tls_files, write_config
from simulator.credentials import read_credentials, write_credentials
from simulator.profiles import describe, parse_mix, profiles_for

VAR = Path("var")
DEV_ENV = VAR / "dev.env"
SIM_CREDENTIALS = VAR / "simulator-devices.json"
# Both client generations side by side: 6 and 4 of the default 10 screens, in proportion else.
SIM_PROFILE_MIX = "reference=6,infoscreen-2025=4"
MOSQUITTO_HINT = "sudo apt-get install -y mosquitto mosquitto-clients"
BROKER_NAMES = ("localhost",)
BROKER_ADDRESSES = ("127.0.0.1", "::1")


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(wanted: int | None, previous: str | None, default: int,
              taken: tuple[int, ...] = ()) -> int:
    if wanted:
        return wanted
    for candidate in (int(previous) if previous else None, default):
        if candidate and candidate not in taken and port_is_free(candidate):
            return candidate
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dev_values(settings: Settings, args: argparse.Namespace, previous: dict[str, str]) -> dict:
    """The dev stack's settings; secrets and ids from the last run are kept."""

    def keep(name: str, make) -> str:
        return previous.get(name) or make()

    # A port from a run before TLS (plain MQTT) is not reused for a TLS listener. Before the
    # services had a listener of their own, MQTT_PORT was the devices' port.
    was_tls = previous.get("MQTT_TLS_ENABLED") == "true"
    split = "DEVICE_MQTT_PORT" in previous
    device_port = pick_port(
        args.mqtt_port,
        previous.get("DEVICE_MQTT_PORT" if split else "MQTT_PORT") if was_tls else None, 8884,
    )
    service_port = pick_port(args.service_port, previous.get("MQTT_PORT") if split else None,
                             8885, taken=(device_port,))
    broker_dir = VAR / "mosquitto"
    web_port = pick_port(args.web_port, previous.get("SERVER_PORT"), 8080)
    def port_of(name: str) -> str | None:
        return previous.get(name, "").rpartition(":")[2] or None

    listener_metrics = pick_port(None, port_of("LISTENER_METRICS_ADDRESS"), 9101)
    scheduler_metrics = pick_port(None, port_of("SCHEDULER_METRICS_ADDRESS"), 9102,
                                  taken=(listener_metrics,))
    database_url = os.environ.get("DATABASE_URL") or previous.get("DATABASE_URL") or (
        settings.database_url
    )
    return {
        "INFOSCREEN_ENV": "development",
        "DATABASE_URL": database_url,
        "SECRET_KEY": keep("SECRET_KEY", lambda: secrets.token_urlsafe(48)),
        "NOTIFY_SECRET_KEY": keep("NOTIFY_SECRET_KEY", lambda: secrets.token_urlsafe(48)),
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(service_port),
        "DEVICE_MQTT_PORT": str(device_port),
        "MQTT_TLS_ENABLED": "true",
        "MQTT_TLS_CA_CERT": str(certs.CertStore.in_broker_dir(broker_dir).bundle),
        "MQTT_TOPIC_PREFIX": settings.mqtt_topic_prefix,
        "MQTT_USER": "infoscreen-server",
        "MQTT_PASSWORD": keep("MQTT_PASSWORD", generate_password),
        "DEVICE_UUID": keep("DEVICE_UUID", lambda: str(uuid.uuid4())),
        "DEVICE_PASSWORD": keep("DEVICE_PASSWORD", generate_password),
        "MONITOR_USER": "monitor",
        "MONITOR_PASSWORD": keep("MONITOR_PASSWORD", generate_password),
        "SIMULATOR_USER": "loadgen",
        "SIMULATOR_PASSWORD": keep("SIMULATOR_PASSWORD", generate_password),
        "BROKER_DIR": str(broker_dir),
        "SERVER_BIND": f"127.0.0.1:{web_port}",
        "SERVER_PORT": str(web_port),
        "INFOSCREEN_URL": f"http://127.0.0.1:{web_port}",
        "INFOSCREEN_ADMIN_USER": "admin",
        "INFOSCREEN_ADMIN_PASSWORD": keep("INFOSCREEN_ADMIN_PASSWORD", staff_password),
        "LISTENER_CLIENT_ID": "infoscreen-listener-dev",
        "LISTENER_METRICS_ADDRESS": f"127.0.0.1:{listener_metrics}",
        "SCHEDULER_METRICS_ADDRESS": f"127.0.0.1:{scheduler_metrics}",
        "LISTENER_METRICS_URL": f"http://127.0.0.1:{listener_metrics}/metrics",
        "SCHEDULER_METRICS_URL": f"http://127.0.0.1:{scheduler_metrics}/metrics",
    }


def simulator_devices(count: int) -> list[tuple[str, str]]:
    """The simulated screens' logins, kept across runs so the fleet stays the same."""
    devices = read_credentials(SIM_CREDENTIALS) if SIM_CREDENTIALS.exists() else []
    devices += [(str(uuid.uuid4()), generate_password()) for _ in range(count - len(devices))]
    write_credentials(SIM_CREDENTIALS, devices)
    return devices[:count] if count else devices


def write_dev_env(values: dict[str, str]) -> None:
    lines = [
        "# Written by `infoscreen dev`: the settings of the local stack. Kept across runs.",
        "# Use them in a shell with:  set -a; . var/dev.env; set +a",
    ]
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    lines.append("DEVICE_USER=" + shlex.quote(values["DEVICE_UUID"]))
    write_private(DEV_ENV, "\n".join(lines) + "\n")


def ensure_certificates(broker_dir: Path) -> None:
    """The dev CA (once) and a server certificate for localhost, 127.0.0.1 and ::1, renewed
    when it is missing, about to expire or not signed by the current CA."""
    store = certs.CertStore.in_broker_dir(broker_dir)
    if not store.has_ca():
        certs.init_ca(store.directory, common_name="Infoscreen dev CA")
    if _server_cert_is_good(store):
        return
    certs.issue_server(store.directory, dns_names=BROKER_NAMES, ips=BROKER_ADDRESSES, force=True)


def _server_cert_is_good(store: certs.CertStore) -> bool:
    if not (store.server_cert.exists() and store.server_key.exists()):
        return False
    server = certs.load_cert(store.server_cert)
    names, addresses = certs.server_sans(server)
    left = server.not_valid_after_utc - utc_now()
    return (
        set(BROKER_NAMES) <= set(names)
        and set(BROKER_ADDRESSES) <= {str(a) for a in addresses}
        and left.days > certs.WARN_DAYS
        and server.issuer == certs.load_cert(store.ca_cert).subject
    )


def provision_broker(values: dict[str, str], devices: list[tuple[str, str]]) -> BrokerConfig:
    broker_dir = Path(values["BROKER_DIR"])
    # Accounts added by hand (`infoscreen device add`) are kept; ours are (re)written.
    store = AccountStore(broker_dir, values["MQTT_TOPIC_PREFIX"])
    store.add_many(
        [
            (values["MQTT_USER"], "server", values["MQTT_PASSWORD"]),
            (values["MONITOR_USER"], "monitor", values["MONITOR_PASSWORD"]),
            (values["SIMULATOR_USER"], "simulator", values["SIMULATOR_PASSWORD"]),
            (values["DEVICE_UUID"], "device", values["DEVICE_PASSWORD"]),
        ]
        + [(device, "device", password) for device, password in devices]
    )
    ensure_certificates(broker_dir)
    tls = tls_files(certs.CertStore.in_broker_dir(broker_dir).directory)
    config = BrokerConfig(
        broker_dir,
        (
            Listener(int(values["MQTT_PORT"]), "127.0.0.1",
                     "TLS on loopback: the dev stack's own processes", tls=tls, services=True),
            Listener(int(values["DEVICE_MQTT_PORT"]), "127.0.0.1",
                     "TLS on loopback: devices and monitors", tls=tls),
        ),
    )
    write_config(config)
    return config


def create_admin(values: dict[str, str]) -> None:
    """The admin the banner names, with its password, on every start (kept when unchanged)."""
    engine = make_engine(values["DATABASE_URL"])
    with make_session_factory(engine)() as session, session.begin():
        ensure_user(session, values["INFOSCREEN_ADMIN_USER"], "admin",
                    values["INFOSCREEN_ADMIN_PASSWORD"], now=utc_now(), actor="infoscreen dev")
    engine.dispose()


def banner(values: dict[str, str], clients: int, conf: Path) -> str:
    url = values["INFOSCREEN_URL"]
    return "\n".join(
        [
            "",
            "Infoscreen dev stack",
            f"  broker     mqtts://127.0.0.1:{values['DEVICE_MQTT_PORT']}  (Mosquitto with TLS "
            f"for devices and monitors; the stack's processes use {values['MQTT_PORT']}; "
            f"{conf}; CA {values['MQTT_TLS_CA_CERT']})",
            f"  database   {describe_url(values['DATABASE_URL'])}",
            f"  web        {url}  ({url}/healthz, {url}/readyz; {url}/metrics with a token)",
            f"  metrics    listener {values['LISTENER_METRICS_URL']}, "
            f"scheduler {values['SCHEDULER_METRICS_URL']}",
            f"  admin      {values['INFOSCREEN_ADMIN_USER']} / "
            f"{values['INFOSCREEN_ADMIN_PASSWORD']}  (staff sign-in)",
            f"  simulator  {clients} screens ({sim_profiles(clients)})" if clients
            else "  simulator  off",
            f"  settings   {DEV_ENV}  (in a shell: set -a; . {DEV_ENV}; set +a)",
            "  try        .venv/bin/infoscreen clients",
            "Ctrl-C stops everything.",
            "",
        ]
    )


SIM_START_DELAY = 5  # seconds: the listener's start-up on a slow machine, with room to spare


def sim_profiles(clients: int) -> str:
    """`6 reference, 4 infoscreen-2025`: what the simulator runs for `clients` screens."""
    return describe(profiles_for(parse_mix(SIM_PROFILE_MIX), 0, clients))


def run_dev(settings: Settings, args: argparse.Namespace) -> int:
    from honcho.manager import Manager

    mosquitto = find_mosquitto()
    if mosquitto is None:
        print(f"Mosquitto is not installed. Install it with:\n  {MOSQUITTO_HINT}\n"
              "or run `make dev`, which installs it.", file=sys.stderr)
        return 2
    previous = {k: v for k, v in dotenv_values(DEV_ENV).items() if v} if DEV_ENV.exists() else {}
    values = dev_values(settings, args, previous)
    clients = 0 if args.no_simulator else args.clients
    devices = simulator_devices(clients)
    config = provision_broker(values, devices)
    write_dev_env(values)
    migrate.upgrade(values["DATABASE_URL"])
    create_admin(values)

    env = {**os.environ, **values, "DEVICE_USER": values["DEVICE_UUID"], "PYTHONUNBUFFERED": "1"}
    # Each process is started again when it dies (with a back-off) instead of honcho stopping
    # the whole stack: a listener exits on purpose when its writer process died.
    me = f"{shlex.quote(sys.executable)} -m infoscreen"
    respawn = f"{shlex.quote(sys.executable)} -m infoscreen.respawn --"
    manager = Manager()

    def add(name: str, command: str, **extra: str) -> None:
        manager.add_process(name, f"{respawn} {command}", env={**env, **extra})

    add("mosquitto", f"{shlex.quote(mosquitto)} -c {config.conf_file}")
    add("listener", f"{me} listener")
    add("scheduler", f"{me} scheduler")
    add("web", f"{me} serve --workers 2")
    if clients:
        # The simulated screens are devices: they log in on the devices' listener. They wait
        # for the listener to subscribe: on a first run its session does not exist yet, and
        # what a screen sends once at start (discovery, its TV's state) would be lost.
        add("simulator",
            f"{me} simulate --clients {clients} --credentials {SIM_CREDENTIALS} "
            f"--profile-mix {SIM_PROFILE_MIX} --start-delay {SIM_START_DELAY} "
            "--heartbeat-interval 10 --health-interval 20 --discovery-interval 30 "
            "--service-failed-rate 0.01 --screenshot-interval 30 --event-seconds 120 "
            "--black-screen-rate 0.02",
            MQTT_PORT=values["DEVICE_MQTT_PORT"])
    print(banner(values, clients, config.conf_file), flush=True)
    manager.loop()
    return manager.returncode or 0

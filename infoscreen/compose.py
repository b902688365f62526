"""`infoscreen compose init`: the secrets, certificates and broker files that
docker-compose.yml mounts."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from core.config import Settings
from core.files import write_private
from mosquitto import certs
from mosquitto.accounts import AccountStore, generate_password
from mosquitto.config import BrokerConfig, Listener, tls_files, write_config

COMPOSE_DIR = Path("var/compose")
SERVER_ACCOUNT = "infoscreen-server"  # MQTT_USER in docker-compose.yml
BROKER_MOUNT = Path("/mosquitto/broker")  # where the broker container sees COMPOSE_DIR/broker
BROKER_SERVICE = "mosquitto"  # the services reach the broker by its compose service name
TLS_PORT = 8883  # devices and monitors, published on the host
SERVICE_PORT = 8885  # the services, on the compose network only
GUARD_PLUGIN = Path("/mosquitto/plugins/infoscreen_guard.so")  # built by mosquitto/Dockerfile


# Runs the `infoscreen` image's command line against the stack's database.
FIRST_ADMIN = "docker compose run --rm server user add admin --role admin"


def _secret(path: Path, make) -> str:
    """Keep an existing secret: re-running init must not lock the services out."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = make()
    write_private(path, value + "\n")
    return value


def ensure_certificates(cert_dir: Path, dns: list[str], ips: list[str]) -> None:
    """The CA (once) and a server certificate for the compose service name, localhost and
    the names and addresses devices use. A name the current certificate covers is never
    dropped; the certificate is only reissued when a name or address is new."""
    if not certs.CertStore(cert_dir).has_ca():
        certs.init_ca(cert_dir)
        print(f"created the CA in {cert_dir} (ca-bundle.crt is what devices trust)")
    store = certs.CertStore(cert_dir)
    names = [BROKER_SERVICE, "localhost", *dns]
    addresses = ["127.0.0.1", *ips]
    if store.server_cert.exists():
        old_names, old_addresses = certs.server_sans(certs.load_cert(store.server_cert))
        wanted_names = {certs.validate_dns_name(n) for n in names}
        wanted_addresses = {certs.validate_ip(a) for a in addresses}
        if wanted_names <= set(old_names) and wanted_addresses <= set(old_addresses):
            return
        names += old_names
        addresses += [str(a) for a in old_addresses]
    issued = certs.issue_server(cert_dir, dns_names=names, ips=addresses)
    print(f"issued the broker's certificate for {', '.join(issued.sans)}")


def init_compose(args: argparse.Namespace, settings: Settings) -> int:
    secrets_dir = COMPOSE_DIR / "secrets"
    broker_dir = COMPOSE_DIR / "broker"
    cert_dir = certs.CertStore.in_broker_dir(broker_dir).directory
    try:
        ensure_certificates(cert_dir, args.dns, args.ip)
    except certs.CertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pg_password = _secret(secrets_dir / "postgres_password", lambda: secrets.token_urlsafe(24))
    _secret(
        secrets_dir / "database_url",
        lambda: f"postgresql+psycopg://infoscreen:{pg_password}@postgres:5432/infoscreen",
    )
    _secret(secrets_dir / "secret_key", lambda: secrets.token_urlsafe(48))
    _secret(secrets_dir / "notify_secret_key", lambda: secrets.token_urlsafe(48))
    mqtt_password = _secret(secrets_dir / "mqtt_password", generate_password)
    store = AccountStore(broker_dir, settings.mqtt_topic_prefix)
    store.add(SERVER_ACCOUNT, "server", mqtt_password)
    tls = tls_files(cert_dir, seen_as=certs.CertStore.in_broker_dir(BROKER_MOUNT).directory)
    listeners = [
        Listener(SERVICE_PORT, "0.0.0.0", "TLS: the backend's services (not published)",
                 tls=tls, services=True),
        Listener(TLS_PORT, "0.0.0.0", "TLS: devices and monitors", tls=tls),
    ]
    if args.mtls_port:
        listeners.append(Listener(args.mtls_port, "0.0.0.0", "mutual TLS: devices log in with "
                                  "their certificate (CN = uuid)", tls=tls,
                                  require_certificate=True))
    write_config(
        BrokerConfig(
            broker_dir,
            tuple(listeners),
            max_queued_messages=args.max_queued_messages or settings.broker_max_queued_messages,
            max_queued_bytes=settings.broker_max_queued_bytes,
            max_packet_bytes=settings.broker_max_packet_bytes,
            run_as_user=None,
            log_dest="stdout",
            mount_dir=BROKER_MOUNT,
            guard_plugin=GUARD_PLUGIN,
        )
    )
    # The listener writes screenshots there and the server reads them: a folder of the user
    # the services run as (a named volume would belong to root).
    (COMPOSE_DIR / "screenshots").mkdir(parents=True, exist_ok=True)
    print(f"wrote secrets to {secrets_dir} and the broker's files to {broker_dir}")
    print(f"devices connect with TLS to port {TLS_PORT} and trust {cert_dir / 'ca-bundle.crt'}")
    if args.mtls_port:
        print(f"mutual TLS on port {args.mtls_port}: publish it in docker-compose.yml "
              "(ports of the mosquitto service)")
    print(f"start the stack with:\n  INFOSCREEN_UID={os.getuid()} INFOSCREEN_GID={os.getgid()} "
          "docker compose up -d")
    print("add a device:  BROKER_DIR=var/compose/broker infoscreen device add UUID && "
          "docker compose kill -s HUP mosquitto")
    print(f"create the first admin (its password is printed once):\n  {FIRST_ADMIN}")
    print("the panels: https://$INFOSCREEN_DOMAIN/ (Caddy; localhost when it is not set)")
    return 0

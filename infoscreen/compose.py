"""`infoscreen compose init`: the secrets and broker files that docker-compose.yml mounts."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from core.files import write_private
from mosquitto.accounts import AccountStore, generate_password
from mosquitto.config import BrokerConfig, Listener, write_config

COMPOSE_DIR = Path("var/compose")
SERVER_ACCOUNT = "infoscreen-server"  # MQTT_USER in docker-compose.yml


def _secret(path: Path, make) -> str:
    """Keep an existing secret: re-running init must not lock the services out."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = make()
    write_private(path, value + "\n")
    return value


def init_compose(args: argparse.Namespace, prefix: str) -> int:
    secrets_dir = COMPOSE_DIR / "secrets"
    broker_dir = COMPOSE_DIR / "broker"
    pg_password = _secret(secrets_dir / "postgres_password", lambda: secrets.token_urlsafe(24))
    _secret(
        secrets_dir / "database_url",
        lambda: f"postgresql+psycopg://infoscreen:{pg_password}@postgres:5432/infoscreen",
    )
    _secret(secrets_dir / "secret_key", lambda: secrets.token_urlsafe(48))
    mqtt_password = _secret(secrets_dir / "mqtt_password", generate_password)
    store = AccountStore(broker_dir, prefix)
    store.add(SERVER_ACCOUNT, "server", mqtt_password)
    write_config(
        BrokerConfig(
            broker_dir,
            (Listener(1883, "0.0.0.0", "plain MQTT inside the compose network",
                      allow_plain_on_network=True),),
            max_queued_messages=args.max_queued_messages,
            run_as_user=None,
            log_dest="stdout",
            mount_dir=Path("/mosquitto/broker"),
        )
    )
    print(f"wrote secrets to {secrets_dir} and the broker's files to {broker_dir}")
    print(f"start the stack with:\n  INFOSCREEN_UID={os.getuid()} INFOSCREEN_GID={os.getgid()} "
          "docker compose up -d")
    print("add a device:  BROKER_DIR=var/compose/broker infoscreen device add UUID && "
          "docker compose kill -s HUP mosquitto")
    return 0

"""The simulated screens' logins: a JSON file of (uuid, password), and provisioning them on
the broker (the broker's password file, then a reload)."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from core.config import Settings
from core.contract import CLIENT_ID_RE
from core.files import write_private
from mosquitto.accounts import AccountStore, generate_password, reload_broker

log = logging.getLogger(__name__)

DEFAULT_CREDENTIALS = Path("var/simulator-devices.json")
EXIT_USAGE = 2
EXIT_FAILED = 1


class CredentialsError(Exception):
    """The credentials file is missing or unusable; the message names the file."""


def read_credentials(path: Path) -> list[tuple[str, str]]:
    """Every (uuid, password) of the file; CredentialsError names the file on any problem."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError(
            f"{path}: no such credentials file; run with --provision to create it and the "
            "device accounts"
        ) from None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{path}: cannot read it as JSON: {exc}") from None
    if not isinstance(entries, list):
        raise CredentialsError(f"{path}: expected a JSON list of {{uuid, password}} objects")
    devices = []
    for number, entry in enumerate(entries, start=1):
        ok = isinstance(entry, dict) and isinstance(entry.get("password"), str)
        if not ok or not CLIENT_ID_RE.match(str(entry.get("uuid", ""))):
            raise CredentialsError(f"{path}: entry {number} needs a uuid and a password")
        devices.append((entry["uuid"].lower(), entry["password"]))
    return devices


def load_credentials(path: Path, count: int) -> list[tuple[str, str]]:
    devices = read_credentials(path)
    if len(devices) < count:
        raise CredentialsError(
            f"{path}: holds {len(devices)} devices, --clients asks for {count}; "
            "run with --provision to create the missing ones"
        )
    return devices[:count]


def provision(settings: Settings, path: Path, count: int) -> list[tuple[str, str]]:
    """Make sure the file holds `count` devices and the broker knows every one of them."""
    devices = read_credentials(path) if path.exists() else []
    missing = count - len(devices)
    if missing > 0:
        devices += [(str(uuid.uuid4()), generate_password()) for _ in range(missing)]
        write_credentials(path, devices)
        log.info("simulator: added %d devices to %s", missing, path)
    devices = devices[:count]
    store = AccountStore(settings.broker_dir, settings.mqtt_topic_prefix)
    known = store.load()
    # Also re-creates accounts of devices the file has but the broker lost (a wiped BROKER_DIR).
    to_add = [(u, "device", p) for u, p in devices if u not in known]
    if to_add:
        store.add_many(to_add)
        reloaded = reload_broker(settings.broker_dir / "mosquitto.pid")
        log.info(
            "simulator: created %d device accounts in %s (%s)",
            len(to_add),
            settings.broker_dir,
            "broker reloaded" if reloaded else "no running broker; it reads them on start",
        )
    return devices


def write_credentials(path: Path, devices: list[tuple[str, str]]) -> None:
    """Owner-only: the file holds passwords."""
    entries = [{"uuid": u, "password": p} for u, p in devices]
    write_private(path, json.dumps(entries, indent=1) + "\n")

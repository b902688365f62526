"""Broker accounts: one JSON registry, from which the password file and the ACL are written.

Roles (DESIGN.md §4):
- server: the backend's processes; read all client telemetry, write commands, clear retained
  service_failed, write monitoring/#.
- device: username = the client's uuid; write only its own telemetry, read only its own commands.
- monitor: read monitoring/# and client telemetry, write nothing.
- simulator: publishes telemetry for many client ids over few connections (the load generator
  of dev mode and benchmarks); never needed in production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import signal
import string
from dataclasses import dataclass
from pathlib import Path

from core.contract import (
    CLIENT_ID_RE,
    DEVICE_PUBLISH_SUFFIXES,
    DEVICE_READ_SUFFIXES,
    group_power_intent_topic,
)
from core.files import write_private
from mosquitto.config import DEVICE_PASSWORD_FILE, SERVICE_PASSWORD_FILE

ROLES = ("server", "device", "monitor", "simulator")
# Accounts that log in on the services' listener, with client ids of their own choosing; the
# others log in on the device listeners, where the client id is the username.
SERVICE_ROLES = frozenset({"server", "simulator"})
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$ hashes


class AccountError(ValueError):
    """An account request that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    password_hash: str


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password-file hash ($7$: PBKDF2-HMAC-SHA512, 12-byte salt)."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, password_hash: str) -> bool:
    _, kind, iterations, salt, digest = password_hash.split("$")
    if kind != "7":
        return False
    expected = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations), 64
    )
    return secrets.compare_digest(expected, base64.b64decode(digest))


def generate_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def validate_username(username: str, role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if role == "device":
        if not CLIENT_ID_RE.match(username):
            raise AccountError(
                f"a device's username is its uuid (8-4-4-4-12 hex digits), got {username!r}"
            )
    elif not NAME_RE.match(username) or CLIENT_ID_RE.match(username):
        raise AccountError(
            f"a {role} name is 1-64 letters, digits, '.', '_' or '-' and not a uuid, "
            f"got {username!r}"
        )


class AccountStore:
    """accounts.json plus the files Mosquitto reads (passwd, acl), all 0600, written atomically."""

    def __init__(self, broker_dir: Path, prefix: str = "infoscreen"):
        self.dir = Path(broker_dir)
        self.prefix = prefix
        self.registry = self.dir / "accounts.json"
        self.password_file = self.dir / DEVICE_PASSWORD_FILE
        self.service_password_file = self.dir / SERVICE_PASSWORD_FILE
        self.acl_file = self.dir / "acl"

    def load(self) -> dict[str, Account]:
        if not self.registry.exists():
            return {}
        data = json.loads(self.registry.read_text(encoding="utf-8"))
        return {
            name: Account(name, entry["role"], entry["hash"])
            for name, entry in data["accounts"].items()
        }

    def add(self, username: str, role: str, password: str | None = None) -> str:
        """Create or replace an account; returns the password (generated when not given)."""
        validate_username(username, role)
        if password is not None and len(password) < 12:
            raise AccountError("a broker password needs at least 12 characters")
        accounts = self.load()
        existing = accounts.get(username)
        if existing is not None and existing.role != role:
            raise AccountError(f"{username!r} already exists with role {existing.role}")
        password = password or generate_password()
        accounts[username] = Account(username, role, hash_password(password))
        self.save(accounts)
        return password

    def add_many(self, entries: list[tuple[str, str, str]]) -> None:
        """(username, role, password) triples in one write: provisioning a fleet is one reload."""
        accounts = self.load()
        for username, role, password in entries:
            validate_username(username, role)
            accounts[username] = Account(username, role, hash_password(password))
        self.save(accounts)

    def remove(self, username: str) -> None:
        accounts = self.load()
        if accounts.pop(username, None) is None:
            raise AccountError(f"no broker account named {username!r}")
        self.save(accounts)

    def save(self, accounts: dict[str, Account]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        ordered = sorted(accounts.values(), key=lambda a: a.username)
        registry = {
            "version": 1,
            "accounts": {a.username: {"role": a.role, "hash": a.password_hash} for a in ordered},
        }
        write_private(self.registry, json.dumps(registry, indent=1) + "\n")
        for path, services in ((self.password_file, False),
                               (self.service_password_file, True)):
            write_private(path, "".join(
                f"{a.username}:{a.password_hash}\n"
                for a in ordered if (a.role in SERVICE_ROLES) == services
            ))
        write_private(self.acl_file, render_acl(ordered, self.prefix))


def render_acl(accounts, prefix: str) -> str:
    """Mosquitto ACL with least privilege per role. Unlisted users may do nothing."""
    telemetry = [f"{prefix}/+/{suffix}" for suffix in DEVICE_PUBLISH_SUFFIXES]
    group_intents = group_power_intent_topic(prefix, "+")
    lines = [
        "# Generated by the infoscreen broker tooling from accounts.json; do not edit.",
        "# Mosquitto's acl_file filters delivery; a denied publish gets PUBACK 0x87 (MQTT 5).",
        "",
    ]
    for account in sorted(accounts, key=lambda a: (a.role, a.username)):
        lines.append(f"# role: {account.role}")
        lines.append(f"user {account.username}")
        if account.role == "server":
            lines += [f"topic read {t}" for t in telemetry]
            lines += [
                f"topic write {prefix}/+/service_failed",
                # readwrite: operators watch what was sent with the server login
                # (RESTART_VALIDATION_CHECKLIST.md).
                f"topic readwrite {prefix}/+/commands",
                f"topic write {prefix}/+/group_id",
                f"topic write {group_intents}",
                f"topic readwrite {prefix}/monitoring/#",
            ]
        elif account.role == "device":
            own = f"{prefix}/{account.username}"
            lines += [f"topic write {own}/{suffix}" for suffix in DEVICE_PUBLISH_SUFFIXES]
            lines += [f"topic read {own}/{suffix}" for suffix in DEVICE_READ_SUFFIXES]
            lines.append(f"topic read {group_intents}")
        elif account.role == "monitor":
            lines.append(f"topic read {prefix}/monitoring/#")
            lines += [f"topic read {t}" for t in telemetry]
        elif account.role == "simulator":
            lines += [f"topic write {t}" for t in telemetry]
            lines += [f"topic read {prefix}/+/{suffix}" for suffix in DEVICE_READ_SUFFIXES]
            lines.append(f"topic read {group_intents}")
        lines.append("")
    return "\n".join(lines)


def reload_broker(pid_file: Path) -> bool:
    """Ask a running Mosquitto to re-read its password file and ACL (SIGHUP).

    Returns False when no broker runs from this directory; it reads the files when it starts.
    """
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True

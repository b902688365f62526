"""What a simulated screen sends and reads: its payloads (pure functions of plain values) and
the strict reading of a command, as the deployed clients read it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.clock import as_utc, iso_z
from core.contract import CLIENT_ID_RE

if TYPE_CHECKING:
    pass


PLAYER_UNIT = "infoscreen-player.service"
SOFTWARE_VERSION = "2025.1.0-sim"
SUPPORTED_ACTIONS = ("reboot_host", "shutdown_host", "restart_app")
ACK_SUFFIXES = ("commands/ack", "command/ack")  # deployed clients ack on both; so do we
HARDWARE = {"model": "Raspberry Pi 4 Model B Rev 1.4", "memory_mb": 4096, "simulated": True}

# The command payload of contract v1: exactly these keys, validated strictly.
COMMAND_SCHEMA_VERSION = "1.0"
COMMAND_KEYS = (
    "schema_version",
    "command_id",
    "client_uuid",
    "action",
    "issued_at",
    "expires_at",
    "requested_by",
    "reason",
)
# error_code of a `failed` ack
INVALID_COMMAND = "invalid_command"  # keys missing or unknown, or a value of the wrong type
UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
WRONG_CLIENT = "wrong_client"  # client_uuid names another device
UNSUPPORTED_ACTION = "unsupported_action"
SIMULATED_FAILURE = "simulated_failure"  # DeviceOptions.command_failure_rate
GROUP_ID = "group_id"  # the server's retained group of a device: the id as text, or empty


def hostname_for(index: int) -> str:
    return f"sim-screen-{index:03d}"


def ip_for(index: int) -> str:
    # Documentation-free private range, deterministic so the panels stay stable across runs.
    return f"10.77.{index // 250 % 256}.{index % 250 + 1}"


def discovery_payload(
    client_uuid: str,
    *,
    hostname: str,
    ip: str,
    software_version: str = SOFTWARE_VERSION,
    hardware: dict[str, Any] | None = None,
    group_id: str | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "uuid": client_uuid,
        "hostname": hostname,
        "ip": ip,
        "software_version": software_version,
        "hardware": dict(HARDWARE if hardware is None else hardware),
    }
    if group_id is not None:
        payload["group_id"] = group_id
    return payload


def heartbeat_payload(now: datetime) -> dict[str, Any]:
    return {"timestamp": iso_z(now)}


def health_payload(
    now: datetime,
    *,
    process_status: str,
    cpu_percent: float,
    memory_percent: float,
    reconnect_count: int,
    last_disconnect_at: datetime | None,
) -> dict[str, Any]:
    return {
        "timestamp": iso_z(now),
        "process_status": process_status,
        "cpu_percent": round(cpu_percent, 1),
        "memory_percent": round(memory_percent, 1),
        "broker_connection": {
            "reconnect_count": reconnect_count,
            "last_disconnect_at": iso_z(last_disconnect_at) if last_disconnect_at else None,
        },
    }


def service_failed_payload(
    failed_at: datetime,
    *,
    unit: str = PLAYER_UNIT,
    exit_code: int = 1,
    message: str = "start request repeated too quickly; systemd gave up restarting the player",
) -> dict[str, Any]:
    return {
        "unit": unit,
        "failed_at": iso_z(failed_at),
        "exit_code": exit_code,
        "message": message,
    }


def status_payload(status: str, session: int) -> dict[str, Any]:
    return {"status": status, "session": session}


def ack_payload(
    command_id: str,
    status: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"command_id": command_id, "status": status}
    if error_code is not None:
        payload["error_code"] = error_code
    if error_message is not None:
        payload["error_message"] = error_message
    return payload


@dataclass(frozen=True)
class Command:
    """A command as the server sends it: contract v1, exactly the eight keys."""

    command_id: str
    action: str
    issued_at: datetime
    expires_at: datetime
    requested_by: str
    reason: str


@dataclass(frozen=True)
class Refusal:
    """A command the device answers with `failed` without running it."""

    command_id: str
    error_code: str
    error_message: str


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def parse_command(
    payload: bytes, client_uuid: str, actions: tuple[str, ...] = SUPPORTED_ACTIONS
) -> Command | Refusal | None:
    """Read a command strictly, as the deployed clients do.

    None: it cannot be answered at all (not a JSON object, or no valid `command_id`, so the
    server could not match an ack), and is ignored. A `Refusal` is answered with `failed` and
    a named error_code: keys missing or unknown, another schema version, another client's
    uuid, an action not in `actions`, a value of the wrong type.
    """
    try:
        body = json.loads(payload)
    except (TypeError, ValueError):  # not JSON, or not UTF-8
        return None
    if not isinstance(body, dict):
        return None
    command_id = body.get("command_id")
    if not isinstance(command_id, str) or not CLIENT_ID_RE.match(command_id):
        return None
    missing = [key for key in COMMAND_KEYS if key not in body]
    unknown = sorted(key for key in body if key not in COMMAND_KEYS)
    if missing or unknown:
        problems = []
        if missing:
            problems.append("missing " + ", ".join(missing))
        if unknown:
            problems.append("unknown " + ", ".join(repr(key[:64]) for key in unknown[:5]))
        return Refusal(command_id, INVALID_COMMAND, "command keys: " + "; ".join(problems))
    if body["schema_version"] != COMMAND_SCHEMA_VERSION:
        return Refusal(
            command_id,
            UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {str(body['schema_version'])[:16]!r} is not "
            f"{COMMAND_SCHEMA_VERSION!r}",
        )
    target = body["client_uuid"]
    if not isinstance(target, str) or target.lower() != client_uuid.lower():
        return Refusal(
            command_id, WRONG_CLIENT, f"command is for client {str(target)[:64]!r}, not for me"
        )
    action = body["action"]
    if action not in actions:
        return Refusal(command_id, UNSUPPORTED_ACTION, f"unsupported action {str(action)[:64]!r}")
    issued_at, expires_at = _time(body["issued_at"]), _time(body["expires_at"])
    if issued_at is None or expires_at is None:
        return Refusal(command_id, INVALID_COMMAND, "issued_at and expires_at are ISO 8601 times")
    requested_by, reason = body["requested_by"], body["reason"]
    if not isinstance(requested_by, str) or not isinstance(reason, str):
        return Refusal(command_id, INVALID_COMMAND, "requested_by and reason are strings")
    return Command(command_id, action, issued_at, expires_at, requested_by, reason)


def delivered(info: Any) -> bool:
    """Whether paho has the broker's PUBACK for a message (its MQTTMessageInfo)."""
    try:
        return bool(info.is_published())
    except (RuntimeError, ValueError):  # not sent: no connection, or paho's queue is full
        return False


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()

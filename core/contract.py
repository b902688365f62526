"""MQTT contract v1: topics, payload schemas and the pure parser of device messages.

`parse_message(topic, payload, ...)` turns what a device sent into a `Message` or a
`Rejection`; it never raises on bad input. MQTT_EVENT_PAYLOAD_GUIDE.md describes the same
contract for people.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from core.clock import as_utc

CLIENT_ID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)

# Rejection reasons, one counter each.
PAYLOAD_TOO_LARGE = "payload_too_large"
UNKNOWN_TOPIC = "unknown_topic"
INVALID_CLIENT_ID = "invalid_client_id"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
UUID_MISMATCH = "uuid_mismatch"
UNKNOWN_COMMAND = "unknown_command"  # a valid ack that names no command of that client
# Not a refusal: an ack whose error text was longer than we keep was stored cut. Counted in
# the same table, so that an operator sees it next to the refusals.
TEXT_TRUNCATED = "text_truncated"
REJECTION_REASONS = (
    PAYLOAD_TOO_LARGE,
    UNKNOWN_TOPIC,
    INVALID_CLIENT_ID,
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    INVALID_VALUE,
    UUID_MISMATCH,
    UNKNOWN_COMMAND,
    TEXT_TRUNCATED,
)

PROCESS_STATUSES = ("running", "starting", "crashed", "stopped", "unknown")
ACK_STATUSES = ("accepted", "execution_started", "completed", "failed")
COMMAND_ACTIONS = ("reboot_host", "shutdown_host", "restart_app")
# The deployed clients' frozen command schema: an action outside it fails there.
FROZEN_V1_ACTIONS = ("reboot_host", "shutdown_host")
ACK_ERROR_CODE_MAX = 128
ACK_ERROR_MESSAGE_MAX = 4000
LOG_LEVELS = ("error", "warn", "info")

# Message kinds, named after the topic they come from.
DISCOVERY = "discovery"
HEARTBEAT = "heartbeat"
HEALTH = "health"
SERVICE_FAILED = "service_failed"
COMMAND_ACK = "command_ack"
LOG = "log"
STATUS = "status"
POWER_STATE = "power_state"

_TOPIC_KINDS = {
    ("discovery",): DISCOVERY,
    ("heartbeat",): HEARTBEAT,
    ("health",): HEALTH,
    ("service_failed",): SERVICE_FAILED,
    ("commands", "ack"): COMMAND_ACK,
    ("command", "ack"): COMMAND_ACK,  # alias the deployed clients also publish to
    ("status",): STATUS,
    ("power", "state"): POWER_STATE,
    **{("logs", level): LOG for level in LOG_LEVELS},
}


def device_topic(prefix: str, client_uuid: str, suffix: str) -> str:
    return f"{prefix}/{client_uuid}/{suffix}"


# Device telemetry topics the listener takes in.
INGESTED_SUFFIXES = (
    "discovery",
    "heartbeat",
    "health",
    "service_failed",
    "commands/ack",
    "command/ack",
    "logs/+",
    "status",
    "power/state",
)
# What the ACL lets each device publish for its own uuid: the above, and the deployed clients'
# screenshots, which the broker accepts although nothing stores them yet.
DEVICE_PUBLISH_SUFFIXES = (*INGESTED_SUFFIXES, "dashboard", "screenshot")
# Server -> device topics each device reads for its own uuid.
DEVICE_READ_SUFFIXES = ("commands", "group_id")


def group_power_intent_topic(prefix: str, group_id: int | str) -> str:
    return f"{prefix}/groups/{group_id}/power/intent"


def subscription_topics(prefix: str) -> list[str]:
    """Every client-to-server topic filter the listener subscribes to."""
    return [f"{prefix}/+/{suffix}" for suffix in INGESTED_SUFFIXES]


def _utc(value: datetime) -> datetime:
    return as_utc(value)


def _text_or_number(value: Any) -> Any:
    # group ids and error codes arrive as numbers from some clients; we keep them as text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


UTCDatetime = Annotated[datetime, AfterValidator(_utc)]
# Integers are bounded to what the database columns hold, so no message can fail to store.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
ShortText = Annotated[str, Field(min_length=1, max_length=255)]
Code = Annotated[str, BeforeValidator(_text_or_number), Field(max_length=64)]


class _Payload(BaseModel):
    # Unknown keys are ignored, so clients may add fields without being refused.
    model_config = ConfigDict(extra="ignore", frozen=True)

    uuid: str | None = None
    client_uuid: str | None = None

    def named_uuids(self) -> list[str]:
        return [name for name in (self.uuid, self.client_uuid) if name is not None]


class DiscoveryPayload(_Payload):
    uuid: str
    hostname: ShortText
    ip: Annotated[str, Field(max_length=45)]
    software_version: Annotated[str, Field(max_length=64)]
    hardware: dict[str, Any] | str | None = None
    group_id: Code | None = None
    # Our extension: the actions the device carries out. Names we do not know are ignored
    # (a newer client may know more), so that they never cost the discovery.
    capabilities: Annotated[list[Annotated[str, Field(max_length=64)]],
                            Field(max_length=32)] | None = None

    def known_capabilities(self) -> list[str] | None:
        if self.capabilities is None:
            return None
        return [a for a in COMMAND_ACTIONS if a in self.capabilities]


class HeartbeatPayload(_Payload):
    timestamp: UTCDatetime | None = None


class BrokerConnection(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    reconnect_count: Count
    last_disconnect_at: UTCDatetime | None = None


class HealthPayload(_Payload):
    """The reference shape has a top-level `timestamp` and `process_status`; the deployed
    clients send neither, but `expected_state`, `actual_state` and `health_metrics`. Where
    the process status sits below `actual_state` is not published: it is looked for in the
    likely places, and a value we do not know leaves the status unchanged."""

    timestamp: UTCDatetime | None = None
    process_status: Literal["running", "starting", "crashed", "stopped", "unknown"] | None = None
    broker_connection: BrokerConnection | None = None
    actual_state: Any = None

    def reported_process_status(self) -> str | None:
        if self.process_status is not None:
            return self.process_status
        state = self.actual_state
        if isinstance(state, str):
            found: Any = state
        elif isinstance(state, dict):
            found = state.get("process_status", state.get("status"))
        else:
            return None
        if isinstance(found, str) and found.strip().lower() in PROCESS_STATUSES:
            return found.strip().lower()
        return None


class ServiceFailedPayload(_Payload):
    unit: ShortText
    failed_at: UTCDatetime
    exit_code: Int32 | None = None
    message: Annotated[str, Field(max_length=4000)] | None = None


class CommandAckPayload(_Payload):
    # Error texts have no length limit here: a long one is cut (and counted) by
    # `within_limits`, never a reason to drop an ack that moves a command.
    command_id: Annotated[str, Field(pattern=CLIENT_ID_RE.pattern)]
    status: Literal["accepted", "execution_started", "completed", "failed"]
    error_code: Annotated[str, BeforeValidator(_text_or_number)] | None = None
    error_message: str | None = None

    def within_limits(self) -> tuple[CommandAckPayload, bool]:
        """The ack with its error texts cut to what we keep, and whether anything was cut."""
        code, message = self.error_code, self.error_message
        cut = (code is not None and len(code) > ACK_ERROR_CODE_MAX) or (
            message is not None and len(message) > ACK_ERROR_MESSAGE_MAX)
        if not cut:
            return self, False
        return self.model_copy(update={
            "error_code": None if code is None else code[:ACK_ERROR_CODE_MAX],
            "error_message": None if message is None else message[:ACK_ERROR_MESSAGE_MAX],
        }), True


class LogPayload(_Payload):
    timestamp: UTCDatetime
    message: Annotated[str, Field(max_length=16_000)]
    context: dict[str, Any] | None = None


class StatusPayload(_Payload):
    status: Literal["online", "offline"]
    session: Count | None = None


class TvPower(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    applied_state: Literal["on", "off"]
    source: Annotated[str, Field(max_length=32)] | None = None  # mqtt_intent, local_fallback
    result: Literal["ok", "skipped", "error"]
    detail: Annotated[str, Field(max_length=1000)] | None = None


class PowerStatePayload(_Payload):
    """TV power telemetry of the deployed clients (HDMI-CEC), sent after each change."""

    schema_version: Annotated[str, Field(max_length=16)] | None = None
    intent_id: Annotated[str, BeforeValidator(_text_or_number), Field(max_length=64)] | None = None
    client_id: str | None = None
    reported_at: UTCDatetime | None = None
    power: TvPower

    def named_uuids(self) -> list[str]:
        return [*super().named_uuids(), *([self.client_id] if self.client_id else [])]


_SCHEMAS: dict[str, type[_Payload]] = {
    DISCOVERY: DiscoveryPayload,
    HEARTBEAT: HeartbeatPayload,
    HEALTH: HealthPayload,
    SERVICE_FAILED: ServiceFailedPayload,
    COMMAND_ACK: CommandAckPayload,
    LOG: LogPayload,
    STATUS: StatusPayload,
    POWER_STATE: PowerStatePayload,
}


@dataclass(frozen=True, slots=True)
class Message:
    """A valid device message. `payload` is None only for a cleared service_failed."""

    kind: str
    client_uuid: str
    received_at: datetime
    payload: Any
    topic: str = ""
    raw: dict[str, Any] | None = None  # the health document as sent, kept for the API
    # Handed out by the broker from its retained store: a past state, not a sign of life.
    retained: bool = False
    truncated: bool = False  # an ack whose error text was cut to what we keep

    @property
    def is_sign_of_life(self) -> bool:
        """Sent by the device just now: not a retained copy replayed on (re)subscribe, and
        not an `offline` status (its Last Will, which the broker publishes when it is gone)."""
        if self.retained:
            return False
        return not (self.kind == STATUS and self.payload.status == "offline")

    @property
    def log_level(self) -> str:
        return self.topic.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    topic: str
    detail: str
    excerpt: str


def excerpt(payload: bytes, limit: int = 120) -> str:
    text = payload[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(payload) > limit else "")


def classify_error(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "json_invalid":
        return INVALID_JSON
    if kind in ("model_type", "model_attributes_type") and not error["loc"]:
        return NOT_AN_OBJECT
    if kind == "missing":
        return MISSING_FIELD
    if kind.endswith(("_type", "_parsing")) or kind == "union_tag_invalid":
        return WRONG_TYPE
    if kind == "literal_error" and not isinstance(error.get("input"), str):
        return WRONG_TYPE  # every choice in the contract is a string
    return INVALID_VALUE


def describe_error(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "payload"
    return f"{where}: {error['msg']}"


def parse_message(
    topic: str,
    payload: bytes,
    received_at: datetime,
    *,
    prefix: str = "infoscreen",
    max_payload_bytes: int = 65_536,
    retained: bool = False,
) -> Message | Rejection:
    """Parse one device message. Pure: the same input gives the same answer, nothing raises."""

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(reason, topic[:255], detail[:300], excerpt(payload))

    if len(payload) > max_payload_bytes:
        return reject(PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, limit {max_payload_bytes}")
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != prefix:
        return reject(UNKNOWN_TOPIC, "not a client topic of this contract")
    kind = _TOPIC_KINDS.get(tuple(parts[2:]))
    if kind is None:
        return reject(UNKNOWN_TOPIC, f"no such topic in contract v1: {'/'.join(parts[2:])}")
    client_uuid = parts[1]
    if not CLIENT_ID_RE.match(client_uuid):
        return reject(INVALID_CLIENT_ID, "the topic's client id is not a uuid")

    if kind == SERVICE_FAILED and not payload.strip():
        return Message(kind, client_uuid, received_at, None, topic, retained=retained)
    if kind == STATUS and payload.strip() in (b"online", b"offline"):
        status = StatusPayload(status=payload.strip().decode())
        return Message(kind, client_uuid, received_at, status, topic, retained=retained)

    try:
        parsed = _SCHEMAS[kind].model_validate_json(payload)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        return reject(classify_error(error), describe_error(error))
    for named in parsed.named_uuids():
        if named != client_uuid:
            return reject(UUID_MISMATCH, f"payload names {named[:40]!r}, topic names {client_uuid}")
    # The health document is stored as sent: its resource figures are free-form.
    raw = json.loads(payload) if kind == HEALTH else None
    truncated = False
    if kind == COMMAND_ACK:
        parsed, truncated = parsed.within_limits()
    return Message(kind, client_uuid, received_at, parsed, topic, raw, retained, truncated)

"""MQTT 5 on the wire, as much as the load generator needs: encoding CONNECT and PUBLISH
(templates with holes for the packet id and the timestamp, filled per message), and reading
what the broker sends back (CONNACK and its properties)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from core.clock import utc_now

KEEPALIVE = 60

# health-2025: a health report as the deployed Infoscreen 2025 clients send it.
KINDS = ("heartbeat", "health", "health-2025")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TIMESTAMP_HOLE = "0000-00-00T00:00:00.000000Z"  # as wide as every formatted timestamp
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"  # MQTT 5: no reason code means 0x00, normal disconnection
CONNACK, PUBACK, PINGRESP, SERVER_DISCONNECT = 2, 4, 13, 14
PACKET_IDS = [struct.pack("!H", n) for n in range(65536)]  # index 0 unused (ids are 1..65535)

# MQTT 5 property identifiers by value type, to walk a CONNACK's properties.
_BYTE_PROPS = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_U16_PROPS = {0x13, 0x21, 0x22, 0x23}
_U32_PROPS = {0x02, 0x11, 0x18, 0x27}
_STRING_PROPS = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_BINARY_PROPS = {0x09, 0x16}
SERVER_KEEP_ALIVE, RECEIVE_MAXIMUM, MAXIMUM_QOS, REASON_STRING = 0x13, 0x21, 0x24, 0x1F
CONNACK_REASONS = {
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
}


class LoadError(Exception):
    """The load could not be generated (refused login, broker gone); the message says why."""


# Encoding --------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """MQTT's variable byte integer (remaining length, property lengths)."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"cannot encode {value} as an MQTT variable byte integer")
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_varint(data: bytes | bytearray, offset: int) -> tuple[int, int] | None:
    """(value, offset after it), or None when `data` ends before the integer does."""
    value = 0
    for shift in range(4):
        if offset >= len(data):
            return None
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << (7 * shift)
        if not byte & 0x80:
            return value, offset
    raise LoadError("malformed variable byte integer from the broker")


def _string(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


def encode_connect(
    client_id: str, username: str, password: str, *, keepalive: int = KEEPALIVE
) -> bytes:
    """MQTT 5 CONNECT with clean start, no will, no properties."""
    flags = 0x80 | 0x40 | 0x02  # username, password, clean start
    variable = _string(b"MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive) + b"\x00"
    payload = b"".join(_string(s.encode()) for s in (client_id, username, password))
    body = variable + payload
    return b"\x10" + encode_varint(len(body)) + body


def encode_publish(
    topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0, retain: bool = False
) -> bytes:
    header = 0x30 | qos << 1 | int(retain)
    packet_id_bytes = struct.pack("!H", packet_id) if qos else b""
    body = _string(topic.encode()) + packet_id_bytes + b"\x00" + payload  # \x00: no properties
    return bytes([header]) + encode_varint(len(body)) + body


def payload_template(kind: str) -> bytes:
    """The JSON a device sends for `kind`, with TIMESTAMP_HOLE where the time goes."""
    document: dict[str, Any] = {"timestamp": TIMESTAMP_HOLE}
    if kind == "health":
        document["process_status"] = "running"
        document["broker_connection"] = {"reconnect_count": 0, "last_disconnect_at": None}
    elif kind == "health-2025":  # no top-level timestamp: the time goes in last_disconnect_at
        document = {
            "expected_state": {"event_id": 1042, "event_type": "presentation",
                               "process": "chromium"},
            "actual_state": {"process_status": "running", "current_process": "chromium",
                             "process_pid": 1234, "restart_count": 0},
            "health_metrics": {"cpu_percent": 12.5, "memory_percent": 41.0,
                               "temperature_c": 52.3, "disk_free_mb": 10240},
            "broker_connection": {"reconnect_count": 2, "last_disconnect_at": TIMESTAMP_HOLE},
        }
    elif kind != "heartbeat":
        raise ValueError(f"unknown load kind {kind!r}; choose from {', '.join(KINDS)}")
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PublishTemplate:
    """One pre-encoded PUBLISH: head + [packet id] + mid + timestamp + tail."""

    head: bytes  # fixed header and topic
    mid: bytes  # properties and the payload up to the timestamp
    tail: bytes  # the payload after the timestamp
    qos: int

    def render(self, timestamp: bytes, packet_id: int = 0) -> bytes:
        packet_id_bytes = PACKET_IDS[packet_id] if self.qos else b""
        return self.head + packet_id_bytes + self.mid + timestamp + self.tail


def publish_template(topic: str, kind: str, qos: int) -> PublishTemplate:
    before, after = payload_template(kind).split(TIMESTAMP_HOLE.encode())
    topic_field = _string(topic.encode())
    packet_id_size = 2 if qos else 0
    remaining = len(topic_field) + packet_id_size + 1 + len(before) + len(TIMESTAMP_HOLE)
    remaining += len(after)
    head = bytes([0x30 | qos << 1]) + encode_varint(remaining) + topic_field
    return PublishTemplate(head, b"\x00" + before, after, qos)


def topic_of(kind: str) -> str:
    return "health" if kind == "health-2025" else kind


def format_timestamp() -> bytes:
    return utc_now().strftime(TIMESTAMP_FORMAT).encode()


# Decoding what the broker sends ----------------------------------------------------------


def parse_properties(data: bytes, offset: int) -> tuple[dict[int, Any], int]:
    """MQTT 5 properties at `offset`: ({identifier: value}, offset after them)."""
    decoded = decode_varint(data, offset)
    if decoded is None:
        raise LoadError("truncated properties from the broker")
    length, offset = decoded
    end = offset + length
    props: dict[int, Any] = {}
    while offset < end:
        ident = data[offset]
        offset += 1
        if ident in _BYTE_PROPS:
            props[ident], offset = data[offset], offset + 1
        elif ident in _U16_PROPS:
            props[ident], offset = struct.unpack_from("!H", data, offset)[0], offset + 2
        elif ident in _U32_PROPS:
            props[ident], offset = struct.unpack_from("!I", data, offset)[0], offset + 4
        elif ident == 0x0B:  # subscription identifier, a varint
            decoded = decode_varint(data, offset)
            if decoded is None:
                raise LoadError("truncated properties from the broker")
            props[ident], offset = decoded
        elif ident in _STRING_PROPS or ident in _BINARY_PROPS:
            size = struct.unpack_from("!H", data, offset)[0]
            props[ident], offset = bytes(data[offset + 2 : offset + 2 + size]), offset + 2 + size
        elif ident == 0x26:  # user property: two strings, skipped
            for _ in range(2):
                offset += 2 + struct.unpack_from("!H", data, offset)[0]
        else:
            raise LoadError(f"unknown MQTT 5 property 0x{ident:02x} from the broker")
    return props, end


def parse_connack(body: bytes) -> tuple[int, dict[int, Any]]:
    """(reason code, properties) of a CONNACK's variable header."""
    if len(body) < 2:
        raise LoadError("truncated CONNACK")
    props, _ = parse_properties(body, 2) if len(body) > 2 else ({}, 2)
    return body[1], props

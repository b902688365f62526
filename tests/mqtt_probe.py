"""One MQTT 5 CONNECT over a raw socket, plain or TLS: what a client sees at each layer.

paho hides why a connection failed (it logs and calls on_disconnect); the broker-security tests
need to tell a TLS refusal from a CONNACK refusal and to see the certificate the broker served.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import uuid
from dataclasses import dataclass

CONNACK = 0x20


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(username: str | None, password: str | None, client_id: str) -> bytes:
    """MQTT 5 CONNECT, clean start, keepalive 10 s, no properties."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    body = _string(b"MQTT") + bytes([5, flags]) + struct.pack("!H", 10) + _varint(0)
    body += _string(client_id.encode())
    if username:
        body += _string(username.encode())
    if password:
        body += _string(password.encode())
    return bytes([0x10]) + _varint(len(body)) + body


@dataclass
class Attempt:
    error: OSError | None = None  # what the TLS layer or the socket raised, if anything
    connack: int | None = None    # the CONNACK reason code, if a CONNACK came
    peer_der: bytes | None = None  # the certificate the broker served, once the handshake ran

    @property
    def accepted(self) -> bool:
        return self.connack == 0

    @property
    def peer_fingerprint(self) -> str | None:
        return hashlib.sha256(self.peer_der).hexdigest() if self.peer_der else None


def attempt(port: int, context: ssl.SSLContext | None, *, server_hostname: str = "localhost",
            username: str | None = None, password: str | None = None,
            timeout: float = 5) -> Attempt:
    """Connect to 127.0.0.1:port (TLS when `context` is given, verifying `server_hostname`),
    send a CONNECT and read the answer. Never raises for a refusal: the Attempt says what
    happened."""
    result = Attempt()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            sock: socket.socket = raw
            if context is not None:
                sock = context.wrap_socket(raw, server_hostname=server_hostname)
                result.peer_der = sock.getpeercert(binary_form=True)
            sock.sendall(connect_packet(username, password, f"probe-{uuid.uuid4().hex[:8]}"))
            data = b""
            while len(data) < 4:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            if len(data) >= 4 and data[0] == CONNACK:
                result.connack = data[3]  # fixed header, remaining length, flags, reason
    except OSError as exc:  # ssl.SSLError is an OSError
        result.error = exc
    return result

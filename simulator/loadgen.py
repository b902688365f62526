"""The benchmarks' load generator: heartbeats for many client ids over a few raw MQTT 5 sockets.

paho costs far more CPU per message than the broker and the listener we want to measure, so
this speaks MQTT 5 itself: CONNECT as a `simulator`-role account, then PUBLISH packets encoded
once per (client id, kind) with holes for the packet id and the payload's timestamp. Each
connection runs in its own process and paces itself in 5 ms slices; QoS 1 keeps a bounded
window of unacknowledged packets and counts PUBACKs. A run stops by itself after `duration`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import secrets
import select
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from core.contract import device_topic
from simulator.wire import (
    CONNACK,
    CONNACK_REASONS,
    DISCONNECT,
    KEEPALIVE,
    MAXIMUM_QOS,
    PACKET_IDS,
    PINGREQ,
    PUBACK,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SERVER_DISCONNECT,
    SERVER_KEEP_ALIVE,
    LoadError,
    decode_varint,
    encode_connect,
    format_timestamp,
    parse_connack,
    payload_template,
    publish_template,
    topic_of,
)

log = logging.getLogger(__name__)

SLICE_SECONDS = 0.005
MAX_BURST_SLICES = 4  # behind schedule, catch up by at most this many slices per write
DEFAULT_WINDOW = 1000


@dataclass(frozen=True)
class LoadResult:
    sent: int
    acked: int
    elapsed: float
    achieved_rate: float
    rejected: int = 0  # QoS 1 PUBACKs with a failure reason code (e.g. 0x87 not authorized)
    qos: int = 0
    connections: int = 1
    cpu_seconds: float = 0.0  # the generator's own CPU, all connections: is it the bottleneck?

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def client_ids(n: int, namespace_seed: str | int = 0) -> list[str]:
    """`n` distinct, deterministic, lower-case uuids (the same seed gives the same fleet)."""
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"infoscreen-loadgen/{namespace_seed}")
    return [str(uuid.uuid5(namespace, str(i))) for i in range(n)]


# One connection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsOptions:
    """TLS for the load generator's connections; plain values, so it reaches the spawned
    workers (an SSLContext does not pickle)."""

    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> TlsOptions | None:
        if not settings.mqtt_tls_enabled:
            return None
        return cls(settings.mqtt_tls_ca_cert or None, settings.mqtt_tls_certfile or None,
                   settings.mqtt_tls_keyfile or None, settings.mqtt_tls_insecure)

    def context(self, host: str) -> ssl.SSLContext:
        from mqtt_client import client_tls_context

        return client_tls_context(cafile=self.cafile, certfile=self.certfile,
                                  keyfile=self.keyfile, insecure=self.insecure, host=host)


@dataclass(frozen=True)
class ConnectionPlan:
    index: int
    host: str
    port: int
    username: str
    password: str
    prefix: str
    client_ids: tuple[str, ...]
    kinds: tuple[str, ...]
    count: int  # messages to send
    duration: float
    qos: int
    window: int
    connect_timeout: float
    drain_timeout: float
    tls: TlsOptions | None = None


@dataclass
class ConnectionStats:
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None


class Publisher:
    """One raw MQTT 5 connection that publishes a plan's messages at its pace."""

    def __init__(self, plan: ConnectionPlan, sock: socket.socket, window: int, keepalive: int):
        self.plan = plan
        self.sock = sock
        self.window = window
        self.keepalive = keepalive
        self.stats = ConnectionStats()
        self.templates = [
            publish_template(device_topic(plan.prefix, client_id, topic_of(kind)), kind, plan.qos)
            for client_id in plan.client_ids
            for kind in plan.kinds
        ]
        self._buffer = bytearray()
        self._outstanding = bytearray(65536)  # 1 where a packet id awaits its PUBACK
        self._inflight = 0
        self._packet_id = 0
        self._cursor = 0
        self._last_write = 0.0

    @classmethod
    def connect(cls, plan: ConnectionPlan) -> Publisher:
        sock = socket.create_connection((plan.host, plan.port), timeout=plan.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if plan.tls is not None:
            try:
                sock = plan.tls.context(plan.host).wrap_socket(sock, server_hostname=plan.host)
            except OSError:
                sock.close()
                raise
        client_id = f"infoscreen-loadgen-{secrets.token_hex(4)}-{plan.index}"
        sock.sendall(encode_connect(client_id, plan.username, plan.password))
        first, body = _read_packet(sock)
        if first >> 4 != CONNACK:
            raise LoadError(f"expected CONNACK, got packet type {first >> 4}")
        reason, props = parse_connack(body)
        if reason >= 0x80:
            detail = props.get(REASON_STRING, b"").decode(errors="replace")
            name = CONNACK_REASONS.get(reason, detail or "refused")
            raise LoadError(f"broker refused the login: {name} (0x{reason:02x})")
        if plan.qos > props.get(MAXIMUM_QOS, 2):
            raise LoadError(f"broker allows at most QoS {props[MAXIMUM_QOS]}")
        # Sending more unacknowledged QoS 1 packets than the broker's Receive Maximum is a
        # protocol error, so the window never exceeds it.
        window = min(plan.window, props.get(RECEIVE_MAXIMUM, 65535))
        keepalive = props.get(SERVER_KEEP_ALIVE, KEEPALIVE) or KEEPALIVE
        sock.settimeout(max(plan.connect_timeout, 1.0))  # bounds a send to a stalled broker
        return cls(plan, sock, window, keepalive)

    def run(self, abort: Any) -> ConnectionStats:
        """Publish `plan.count` messages evenly over `plan.duration`, then drain the acks."""
        rate = self.plan.count / self.plan.duration
        # Bounded catch-up: a broker that pushes back lowers the achieved rate, it never
        # stretches the run past its duration with one huge write.
        max_burst = max(1, int(rate * SLICE_SECONDS * MAX_BURST_SLICES))
        cpu_start = time.process_time()
        start = self._last_write = time.monotonic()
        deadline = start + self.plan.duration
        next_slice = start
        while not abort.is_set():
            now = time.monotonic()
            # Message k is due at k / rate: the first one at once, the last before the deadline;
            # the slice that reaches the deadline sends what is still due (burst and window
            # allowing), then the run ends.
            due = min(self.plan.count, int((now - start) * rate) + 1) - self.stats.sent
            due = min(due, max_burst)
            if self.plan.qos:
                due = min(due, self.window - self._inflight)
            if due > 0:
                self._send(due)
            elif now - self._last_write > self.keepalive / 2:
                self._write(PINGREQ)
            if now >= deadline:
                break
            next_slice = max(next_slice + SLICE_SECONDS, now)
            self._read(max(min(next_slice, deadline) - time.monotonic(), 0.0))
        self.stats.elapsed = time.monotonic() - start
        self._drain()  # also when stopped early: what was sent gets counted
        self.stats.cpu_seconds = time.process_time() - cpu_start
        return self.stats

    def close(self) -> None:
        """DISCONNECT, then read to EOF: closing with unread data would reset the connection."""
        try:
            self.sock.sendall(DISCONNECT)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(1.0)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            self.sock.close()

    def _send(self, n: int) -> None:
        # The hot loop: locals only, one join and one sendall per slice.
        timestamp = format_timestamp()
        templates, count = self.templates, len(self.templates)
        cursor, packet_id, outstanding = self._cursor, self._packet_id, self._outstanding
        parts: list[bytes] = []
        for _ in range(n):
            template = templates[cursor]
            cursor = cursor + 1 if cursor + 1 < count else 0
            if template.qos:
                packet_id = packet_id + 1 if packet_id < 65535 else 1
                outstanding[packet_id] = 1
                parts += (template.head, PACKET_IDS[packet_id], template.mid)
            else:
                parts += (template.head, template.mid)
            parts += (timestamp, template.tail)
        self._cursor, self._packet_id = cursor, packet_id
        self._write(b"".join(parts))
        self.stats.sent += n
        if self.plan.qos:
            self._inflight += n

    def _write(self, data: bytes) -> None:
        self.sock.sendall(data)
        self._last_write = time.monotonic()

    def _read(self, timeout: float) -> None:
        # TLS: decrypted bytes may wait in the SSL object, where select() does not see them.
        if not (self.plan.tls and self.sock.pending()):
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if not readable:
                return
        data = self.sock.recv(65536)
        if not data:
            raise LoadError("the broker closed the connection")
        self._buffer += data
        # TLS: recv() returns one record at most, and the broker sends each PUBACK in its own
        # record; take every record that has already arrived, or acks trail at one per slice.
        while self.plan.tls and (self.sock.pending()
                                 or select.select([self.sock], [], [], 0)[0]):
            data = self.sock.recv(65536)
            if not data:
                raise LoadError("the broker closed the connection")
            self._buffer += data
        self._handle_packets()

    def _handle_packets(self) -> None:
        buf, offset = self._buffer, 0
        while len(buf) - offset >= 2:
            decoded = decode_varint(buf, offset + 1)
            if decoded is None:
                break
            length, body_start = decoded
            end = body_start + length
            if end > len(buf):
                break
            kind = buf[offset] >> 4
            if kind == PUBACK:
                packet_id = buf[body_start] << 8 | buf[body_start + 1]
                reason = buf[body_start + 2] if length > 2 else 0
                self._acknowledge(packet_id, reason)
            elif kind == SERVER_DISCONNECT:
                reason = buf[body_start] if length else 0
                raise LoadError(f"the broker disconnected us: reason 0x{reason:02x}")
            offset = end  # PINGRESP and anything else: nothing to do
        del buf[:offset]

    def _acknowledge(self, packet_id: int, reason: int) -> None:
        if not self._outstanding[packet_id]:
            return  # not ours or already counted
        self._outstanding[packet_id] = 0
        self._inflight -= 1
        if reason < 0x80:
            self.stats.acked += 1
        else:
            self.stats.rejected += 1

    def _drain(self) -> None:
        deadline = time.monotonic() + self.plan.drain_timeout
        while self._inflight > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._read(min(left, 0.1))


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One whole packet from a blocking socket: (first byte, body)."""
    data = bytearray()
    while True:
        decoded = decode_varint(data, 1) if len(data) >= 2 else None
        if decoded is not None and len(data) >= decoded[1] + decoded[0]:
            length, start = decoded
            return data[0], bytes(data[start : start + length])
        chunk = sock.recv(4096)
        if not chunk:
            raise LoadError("the broker closed the connection before answering CONNECT")
        data += chunk


def _worker(plan: ConnectionPlan, results: Any, go: Any, abort: Any) -> None:
    """One process, one connection. Reports ("ready"|"error"|"done", index, detail)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        publisher = Publisher.connect(plan)
    except (OSError, LoadError) as exc:
        results.put(("error", plan.index, f"{plan.host}:{plan.port}: {exc}"))
        return
    results.put(("ready", plan.index, None))
    try:
        # The parent starts every connection at once, or gives up on all of them.
        if go.wait(plan.connect_timeout + 30) and not abort.is_set():
            publisher.run(abort)
    except (OSError, LoadError) as exc:
        publisher.stats.error = str(exc) or type(exc).__name__
    finally:
        publisher.close()
    results.put(("done", plan.index, asdict(publisher.stats)))


# The whole run ----------------------------------------------------------------------------


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _validate(
    rate: float,
    duration: float,
    qos: int,
    connections: int,
    ids: Sequence[str],
    kinds: tuple[str, ...],
) -> None:
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    if qos not in (0, 1):
        raise ValueError("qos must be 0 or 1")
    if not 1 <= connections <= len(ids):
        raise ValueError("connections must be between 1 and the number of client ids")
    for kind in kinds:
        payload_template(kind)  # raises on an unknown kind


def run_load(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    prefix: str,
    client_ids: Sequence[str],
    rate: float,
    duration: float,
    qos: int = 1,
    connections: int = 2,
    kinds: Sequence[str] = ("heartbeat",),
    window: int = DEFAULT_WINDOW,
    connect_timeout: float = 10.0,
    drain_timeout: float = 5.0,
    stop: threading.Event | None = None,
    tls: TlsOptions | None = None,
) -> LoadResult:
    """Publish `rate` messages/s in total for `duration` s, cycling over client ids and kinds.

    With `tls`, every connection speaks TLS (1.2 or newer) and verifies the broker.

    Raises LoadError when a connection is refused or lost. `stop` ends the run early.
    """
    kinds = tuple(kinds)
    _validate(rate, duration, qos, connections, client_ids, kinds)
    counts = _split(round(rate * duration), connections)
    plans = [
        ConnectionPlan(
            index=i,
            host=host,
            port=port,
            username=username,
            password=password,
            prefix=prefix,
            client_ids=tuple(client_ids[i::connections]),
            kinds=kinds,
            count=counts[i],
            duration=duration,
            qos=qos,
            window=window,
            connect_timeout=connect_timeout,
            drain_timeout=drain_timeout,
            tls=tls,
        )
        for i in range(connections)
    ]
    # spawn: a fresh interpreter per connection, safe whatever threads the caller runs.
    ctx = mp.get_context("spawn")
    results, go, abort = ctx.Queue(), ctx.Event(), ctx.Event()
    processes = [
        ctx.Process(target=_worker, args=(plan, results, go, abort), daemon=True) for plan in plans
    ]
    for process in processes:
        process.start()
    try:
        # Process start-up (an interpreter and our imports) is not part of the connect timeout.
        ready = _collect(results, processes, "ready", connect_timeout + 30, stop, abort)
        errors = [detail for status, _, detail in ready if status == "error"]
        if errors:
            abort.set()
            raise LoadError("; ".join(sorted(set(errors))))
        go.set()
        done = _collect(results, processes, "done", duration + drain_timeout + 15, stop, abort)
    finally:
        abort.set()  # after a clean run nobody listens; after a failure everybody stops
        go.set()
        _reap(processes)
    return _result([detail for _, _, detail in done], qos, connections)


def _collect(
    results: Any,
    processes: list[Any],
    phase: str,
    timeout: float,
    stop: threading.Event | None,
    abort: Any,
) -> list[tuple[str, int, Any]]:
    """One report per connection for `phase` ("ready" also accepts "error")."""
    reports: dict[int, tuple[str, int, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(reports) < len(processes):
        if stop is not None and stop.is_set():
            abort.set()  # workers wind down and still report what they sent
        if time.monotonic() > deadline:
            raise LoadError(f"connections did not report {phase} within {timeout:.0f} s")
        try:
            status, index, detail = results.get(timeout=0.1)
        except queue.Empty:
            dead = [i for i, p in enumerate(processes) if p.exitcode and i not in reports]
            if dead:
                code = processes[dead[0]].exitcode
                raise LoadError(f"load process {dead[0]} died (exit code {code})") from None
            continue
        reports[index] = (status, index, detail)
    return list(reports.values())


def _reap(processes: list[Any]) -> None:
    for process in processes:
        process.join(timeout=5)
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def _result(stats: list[dict[str, Any]], qos: int, connections: int) -> LoadResult:
    failed = sorted({s["error"] for s in stats if s["error"]})
    if failed:
        raise LoadError("; ".join(failed))
    sent = sum(s["sent"] for s in stats)
    elapsed = max((s["elapsed"] for s in stats), default=0.0)
    return LoadResult(
        sent=sent,
        acked=sum(s["acked"] for s in stats),
        elapsed=round(elapsed, 3),
        achieved_rate=round(sent / elapsed, 1) if elapsed else 0.0,
        rejected=sum(s["rejected"] for s in stats),
        qos=qos,
        connections=connections,
        cpu_seconds=round(sum(s["cpu_seconds"] for s in stats), 3),
    )

"""One simulated infoscreen: its payloads (pure functions) and its MQTT identity.

The payload builders take plain values and return the JSON object a deployed client sends, so
tests validate them against `core.contract` without a broker. `SimulatedDevice` owns one paho
client logged in as the device (username = uuid) and reacts to the broker in guarded callbacks;
its periodic work (`send_heartbeat`, `health_tick`) is driven by the fleet's single scheduler.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, Protocol

from core.clock import Clock, as_utc, utc_now
from core.contract import CLIENT_ID_RE, device_topic

log = logging.getLogger(__name__)

PLAYER_UNIT = "infoscreen-player.service"
SOFTWARE_VERSION = "2025.1.0-sim"
SUPPORTED_ACTIONS = ("reboot_host", "shutdown_host", "restart_app")
ACK_SUFFIXES = ("commands/ack", "command/ack")  # deployed clients ack on both; so do we
HARDWARE = {"model": "Raspberry Pi 4 Model B Rev 1.4", "memory_mb": 4096, "simulated": True}


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, as the deployed clients write it."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    return {"timestamp": iso_utc(now)}


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
        "timestamp": iso_utc(now),
        "process_status": process_status,
        "cpu_percent": round(cpu_percent, 1),
        "memory_percent": round(memory_percent, 1),
        "broker_connection": {
            "reconnect_count": reconnect_count,
            "last_disconnect_at": iso_utc(last_disconnect_at) if last_disconnect_at else None,
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
        "failed_at": iso_utc(failed_at),
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


def command_acks(command: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """The acks a device answers a command with, or None when it cannot be acked at all.

    A command without a valid `command_id` cannot be answered (the server could not match the
    ack); an unsupported action is refused with `failed`, like the deployed clients do.
    """
    if not isinstance(command, dict):
        return None
    command_id = command.get("command_id")
    if not isinstance(command_id, str) or not CLIENT_ID_RE.match(command_id):
        return None
    action = command.get("action")
    if action not in SUPPORTED_ACTIONS:
        refused = ack_payload(
            command_id,
            "failed",
            error_code="unsupported_action",
            error_message=f"unsupported action {str(action)[:64]!r}",
        )
        return command_id, [refused]
    steps = ("accepted", "execution_started", "completed")
    return command_id, [ack_payload(command_id, status) for status in steps]


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True)
class DeviceOptions:
    """Behaviour of every device of a simulated fleet."""

    heartbeat_interval: float = 30.0
    health_interval: float = 60.0
    # Discovery is sent on every connect and again at this interval, so that a backend that
    # missed it (it was not subscribed yet) learns the hostname without a reconnect.
    discovery_interval: float = 300.0
    crash_rate: float = 0.01  # probability per health interval
    service_failed_rate: float = 0.002  # probability per health interval
    crash_intervals: tuple[int, int] = (2, 4)  # a crash lasts this many health intervals
    software_version: str = SOFTWARE_VERSION
    group_id: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if min(self.heartbeat_interval, self.health_interval, self.discovery_interval) <= 0:
            raise ValueError("heartbeat, health and discovery intervals must be positive")
        for name in ("crash_rate", "service_failed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1")
        low, high = self.crash_intervals
        if not 1 <= low <= high:
            raise ValueError("crash_intervals is (fewest, most) health intervals, at least 1")


class MqttClient(Protocol):
    """The part of paho's Client a device uses (a fake in unit tests)."""

    on_connect: Any
    on_disconnect: Any
    on_message: Any

    def will_set(
        self, topic: str, payload: Any = ..., qos: int = ..., retain: bool = ...
    ) -> Any: ...

    def publish(
        self, topic: str, payload: Any = ..., qos: int = ..., retain: bool = ...
    ) -> Any: ...

    def subscribe(self, topic: Any, qos: int = ...) -> Any: ...

    def is_connected(self) -> bool: ...

    def disconnect(self) -> Any: ...

    def loop_start(self) -> Any: ...

    def loop_stop(self) -> Any: ...


P = ParamSpec("P")


def guarded(callback: Callable[P, None]) -> Callable[P, None]:
    """An exception escaping a paho callback silently kills the client's network loop."""

    @functools.wraps(callback)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            log.exception("simulated device callback %s failed", callback.__name__)

    return wrapper


class SimulatedDevice:
    """One infoscreen: its own broker login, presence, telemetry and command acks."""

    def __init__(
        self,
        client_uuid: str,
        client: MqttClient,
        *,
        index: int,
        prefix: str,
        options: DeviceOptions,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        first_session: int = 1,
    ):
        self.uuid = client_uuid
        self.client = client
        self.index = index
        self.prefix = prefix
        self.options = options
        self.clock = clock
        # Seeded per device: the same seed replays the same crashes whatever the fleet size;
        # no seed, no replay.
        seed = None if options.seed is None else f"{options.seed}:{client_uuid}"
        self.rng = rng or random.Random(seed)
        # Callbacks run on paho's thread, the periodic work on the fleet's scheduler thread.
        self._lock = threading.Lock()
        self.session = first_session - 1  # incremented by every successful connect
        self.connect_count = 0
        self.reconnect_count = 0
        self.last_disconnect_at: datetime | None = None
        self.process_status = "running"
        self._crash_left = 0
        self.service_failures = 0
        self.commands_handled = 0
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_message = self.on_message
        self._set_will(first_session)

    def topic(self, suffix: str) -> str:
        return device_topic(self.prefix, self.uuid, suffix)

    def _publish(
        self, suffix: str, payload: dict[str, Any], *, qos: int, retain: bool = False
    ) -> Any:
        return self.client.publish(self.topic(suffix), encode(payload), qos=qos, retain=retain)

    def _set_will(self, session: int) -> None:
        # The broker stores the will at CONNECT time: it always names the session it belongs
        # to, so a late `offline` of an older session never overrides a newer `online`.
        will = encode(status_payload("offline", session))
        self.client.will_set(self.topic("status"), will, qos=1, retain=True)

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected())

    # paho callbacks (CallbackAPIVersion.VERSION2 signatures) -------------------------------

    @guarded
    def on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("device %s: broker refused the connection: %s", self.uuid, reason_code)
            return
        with self._lock:
            self.session += 1
            self.connect_count += 1
            if self.connect_count > 1:
                self.reconnect_count += 1
            session = self.session
        self._publish("status", status_payload("online", session), qos=1, retain=True)
        self._set_will(session + 1)  # used by the next CONNECT
        self.client.subscribe(self.topic("commands"), qos=1)
        self.send_discovery()

    @guarded
    def on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        with self._lock:
            if self.connect_count:
                self.last_disconnect_at = self.clock()
        if getattr(reason_code, "is_failure", False):  # our own DISCONNECT is not news
            log.warning("device %s lost its connection: %s", self.uuid, reason_code)

    @guarded
    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic != self.topic("commands"):
            return
        try:
            command = json.loads(message.payload)
        except ValueError:
            log.warning("device %s: command is not JSON, ignored", self.uuid)
            return
        answer = command_acks(command)
        if answer is None:
            log.warning("device %s: command without a valid command_id, ignored", self.uuid)
            return
        command_id, acks = answer
        for ack in acks:
            for suffix in ACK_SUFFIXES:
                self._publish(suffix, ack, qos=1)
        if acks[-1]["status"] == "completed" and command.get("action") == "restart_app":
            with self._lock:  # a restarted player comes back healthy
                self.process_status, self._crash_left = "running", 0
        self.commands_handled += 1
        log.info("device %s: command %s %s acked", self.uuid, command_id, command.get("action"))

    # periodic work, called by the fleet scheduler ------------------------------------------

    def send_discovery(self) -> None:
        payload = discovery_payload(
            self.uuid,
            hostname=hostname_for(self.index),
            ip=ip_for(self.index),
            software_version=self.options.software_version,
            group_id=self.options.group_id,
        )
        self._publish("discovery", payload, qos=1)

    def send_heartbeat(self) -> None:
        if self.connected:  # a real player does not queue liveness it cannot deliver
            self._publish("heartbeat", heartbeat_payload(self.clock()), qos=0)

    def health_tick(self) -> None:
        """One health interval: maybe crash, recover or fail the unit, then report health."""
        now = self.clock()
        failed = self._advance_process()
        if failed:
            self.service_failures += 1
            self._publish("service_failed", service_failed_payload(now), qos=1, retain=True)
        if self.connected:
            self._publish("health", self._health(now), qos=0)

    def _advance_process(self) -> bool:
        with self._lock:
            if self._crash_left > 0:
                self._crash_left -= 1
                if self._crash_left == 0:
                    self.process_status = "running"
            elif self.rng.random() < self.options.crash_rate:
                self.process_status = "crashed"
                self._crash_left = self.rng.randint(*self.options.crash_intervals)
            return self.rng.random() < self.options.service_failed_rate

    def _health(self, now: datetime) -> dict[str, Any]:
        with self._lock:
            crashed = self.process_status == "crashed"
            return health_payload(
                now,
                process_status=self.process_status,
                cpu_percent=self.rng.uniform(0.2, 2.0) if crashed else self.rng.uniform(8, 45),
                memory_percent=self.rng.uniform(25, 60),
                reconnect_count=self.reconnect_count,
                last_disconnect_at=self.last_disconnect_at,
            )

    def publish_offline(self) -> Any:
        """Graceful goodbye before DISCONNECT (which discards the will): retained `offline`."""
        with self._lock:
            session = max(self.session, 0)
        return self._publish("status", status_payload("offline", session), qos=1, retain=True)

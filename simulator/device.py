"""One simulated infoscreen: its payloads (pure functions) and its MQTT identity.

The payload builders take plain values and return the JSON object a deployed client sends, so
tests validate them against `core.contract` without a broker. `SimulatedDevice` owns one paho
client logged in as the device (username = uuid) and reacts to the broker in guarded callbacks;
its periodic work (`send_heartbeat`, `health_tick`, `send_screenshot`, `change_event`) is
driven by the fleet's scheduler. The screen walks a playlist of events (simulator.screen) and,
when screenshots are on, sends what it shows periodically and as each event stops and starts.

Commands are answered as a deployed client answers them: `accepted` at once, then
`execution_started`, then `completed` or `failed`. `parse_command` and `plan_command` are pure;
the later steps of a command are handed to the fleet's scheduler (`Timers.call_later`), so a
callback never waits and tests run each step without sleeping. `reboot_host` drops the
connection (the broker publishes the will), comes back through the fleet's `Link`, and reports
`completed` after the reconnect; `shutdown_host` stays down for the rest of the run.

What differs between client generations (health shape, ack keys, the actions run, extra
topics, the screenshot's topic and shape)
is asked of the device's `Profile`; this module's `Profile` is the reference client, and
`simulator.profiles` holds the deployed ones.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol
from zoneinfo import ZoneInfo

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.clock import Clock, as_utc, iso_z, utc_now
from core.contract import CLIENT_ID_RE, device_topic
from simulator import screen
from simulator.screen import EVENT_START, EVENT_STOP, PERIODIC, Event, Screenshot

if TYPE_CHECKING:
    from simulator.tv import Tv

log = logging.getLogger(__name__)

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

# How long the steps of a command take, in seconds at speed 1 (DeviceOptions.speed divides them).
START_SECONDS = (0.05, 0.25)  # accepted -> execution_started
RESTART_APP_SECONDS = (1.0, 3.0)  # execution_started -> completed: the player runs again
POWER_DOWN_SECONDS = (0.5, 1.5)  # execution_started -> the host drops its connection
REBOOT_OFFLINE_SECONDS = (10.0, 90.0)  # away; `completed` follows the reconnect
FAILURE_SECONDS = (0.5, 2.0)  # execution_started -> failed
HANDLED_COMMANDS_KEPT = 1000  # command ids remembered to spot a redelivery
# A host going down first lets its agent hand what it sent to the broker (else paho would send
# it again after the reboot, which a rebooted host cannot): at most this many short waits.
BLACK_CAPTURES = (2, 4)  # a black episode lasts this many periodic captures
DRAIN_POLL_SECONDS = 0.01
DRAIN_POLLS = 100

# The player's process id after a boot; each restart of the player adds a step.
PLAYER_PID = 1187
PLAYER_PID_STEP = 17

# Power states of the host.
POWER_ON = "on"
REBOOTING = "rebooting"
SHUT_DOWN = "shut_down"  # stays off for the rest of the run
# MQTT 5 DISCONNECT 0x04: the broker publishes the will, as when a host drops off the network.
DISCONNECT_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")


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
    # Command durations (execution, restart, reboot downtime) are divided by this; the
    # heartbeat, health and discovery intervals are not.
    speed: float = 1.0
    command_failure_rate: float = 0.0  # probability that a command ends in `failed`
    # The profiles of the fleet, (name, share) in fleet order: simulator.profiles.profiles_for.
    profile_mix: tuple[tuple[str, int], ...] = (("reference", 1),)
    # Profiles with a TV (simulator.tv): standby from the first time to the second, local time
    # in tv_timezone (None: the machine's), and the probability that a switch fails.
    tv_standby: tuple[time, time] = (time(22, 0), time(6, 0))
    tv_timezone: str | None = None
    tv_error_rate: float = 0.0
    # Screenshots (simulator.screen): one every screenshot_interval seconds (0: none), and one
    # as each event of the playlist stops and the next starts, every event_seconds; a periodic
    # capture starts a black episode (the HDMI output died) with black_screen_rate.
    screenshot_interval: float = 0.0
    event_seconds: float = 300.0
    black_screen_rate: float = 0.0
    screenshot_size: tuple[int, int] = screen.SIZE

    def __post_init__(self) -> None:
        if min(self.heartbeat_interval, self.health_interval, self.discovery_interval) <= 0:
            raise ValueError("heartbeat, health and discovery intervals must be positive")
        if self.screenshot_interval < 0 or self.event_seconds <= 0:
            raise ValueError(
                "screenshot_interval is 0 (off) or positive, event_seconds positive"
            )
        if not all(16 <= side <= 7680 for side in self.screenshot_size):
            raise ValueError(
                f"screenshot_size is (width, height), each 16 to 7680, got {self.screenshot_size!r}"
            )
        for name in ("crash_rate", "service_failed_rate", "command_failure_rate", "tv_error_rate",
                     "black_screen_rate"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1, got {value!r}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(
                "speed must be a finite number greater than 0 (command durations are divided "
                f"by it), got {self.speed!r}"
            )
        low, high = self.crash_intervals
        if not 1 <= low <= high:
            raise ValueError("crash_intervals is (fewest, most) health intervals, at least 1")
        if not self.profile_mix or any(share < 1 for _, share in self.profile_mix):
            raise ValueError(
                "profile_mix names at least one profile, each with a share of 1 or more"
            )
        if self.tv_standby[0] == self.tv_standby[1]:
            raise ValueError("tv_standby starts and ends at the same time")
        if self.tv_timezone is not None:
            try:
                ZoneInfo(self.tv_timezone)
            except (ValueError, KeyError):  # KeyError: ZoneInfoNotFoundError
                raise ValueError(
                    f"tv_timezone {self.tv_timezone!r} is no known time zone"
                ) from None


@dataclass(frozen=True)
class CommandPlan:
    """When the steps of one command happen, in seconds already divided by the speed."""

    start_after: float  # accepted -> execution_started
    finish_after: float  # execution_started -> the outcome (reboot_host: -> the host goes down)
    offline_for: float  # reboot_host: the host is away this long, then reconnects and completes
    fails: bool  # ends in `failed` (simulated_failure) instead of running the action


def plan_command(action: str, options: DeviceOptions, rng: random.Random) -> CommandPlan:
    """Draw the durations and the outcome of one command."""

    def seconds(bounds: tuple[float, float]) -> float:
        return rng.uniform(*bounds) / options.speed

    fails = rng.random() < options.command_failure_rate
    start_after = seconds(START_SECONDS)
    if fails:
        return CommandPlan(start_after, seconds(FAILURE_SECONDS), 0.0, fails=True)
    if action == "restart_app":
        return CommandPlan(start_after, seconds(RESTART_APP_SECONDS), 0.0, fails=False)
    offline_for = seconds(REBOOT_OFFLINE_SECONDS) if action == "reboot_host" else 0.0
    return CommandPlan(start_after, seconds(POWER_DOWN_SECONDS), offline_for, fails=False)


class Timers(Protocol):
    """Runs a task later, on the fleet's thread, after the callback that asked has returned."""

    def call_later(self, delay: float, task: Callable[[], None]) -> None: ...


class Link(Protocol):
    """A device's connection to the broker, kept by the fleet."""

    def connect(self) -> None:
        """Connect, and connect again whenever the connection is lost."""

    def disconnect(self, reasoncode: Any = None) -> None:
        """Disconnect on purpose: no reconnect until `connect`."""


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

    def disconnect(self, reasoncode: Any = ...) -> Any: ...


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


@dataclass(frozen=True)
class DeviceState:
    """What a profile's health report reads: one snapshot, taken under the device's lock."""

    index: int
    process_status: str
    process_pid: int | None  # None while the player is down
    restart_count: int  # player restarts since the boot
    reconnect_count: int
    last_disconnect_at: datetime | None
    event: Event  # what the schedule shows now (simulator.screen.PLAYLIST)
    uptime_s: float


@dataclass(frozen=True)
class Periodic:
    """Work the fleet's scheduler runs for a device every `interval` seconds."""

    name: str
    interval: float
    run: Callable[[], None]


class Profile:
    """How a device speaks the contract; this one is the reference client.

    The device asks its profile for its health and ack payloads, the actions it runs, the
    topics it reads besides `commands` and whether it has a TV to report on; the device keeps
    all state. Other profiles (simulator.profiles) override what differs.
    """

    name = "reference"
    actions: tuple[str, ...] = SUPPORTED_ACTIONS
    subscriptions: tuple[str, ...] = ()  # suffixes read at QoS 1 besides `commands`
    # None: health goes out with each health tick (DeviceOptions.health_interval). Else it has
    # a cadence of its own, while crashes and service failures keep the health tick's.
    health_interval: float | None = None

    def health(self, now: datetime, state: DeviceState, rng: random.Random) -> dict[str, Any]:
        crashed = state.process_status == "crashed"
        return health_payload(
            now,
            process_status=state.process_status,
            cpu_percent=rng.uniform(0.2, 2.0) if crashed else rng.uniform(8, 45),
            memory_percent=rng.uniform(25, 60),
            reconnect_count=state.reconnect_count,
            last_disconnect_at=state.last_disconnect_at,
        )

    def ack(
        self,
        command_id: str,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        return ack_payload(command_id, status, error_code=error_code, error_message=error_message)

    def tv(self, client_uuid: str, options: DeviceOptions, rng: random.Random) -> Tv | None:
        """The screen's TV when this client reports its power state; None: it does not."""
        return None

    def screenshot(
        self, client_uuid: str, capture: Screenshot, state: DeviceState
    ) -> tuple[str, bytes]:
        """(topic suffix, payload) of a capture: here the legacy topic's raw JPEG, which says
        nothing of why it was taken."""
        return screen.LEGACY, screen.legacy_screenshot_payload(capture.jpeg)

    def __repr__(self) -> str:
        return f"<profile {self.name}>"


REFERENCE = Profile()


class SimulatedDevice:
    """One infoscreen: its own broker login, presence, telemetry and command handling, spoken
    as its `profile` speaks them."""

    def __init__(
        self,
        client_uuid: str,
        client: MqttClient,
        *,
        index: int,
        prefix: str,
        options: DeviceOptions,
        timers: Timers,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        first_session: int = 1,
        profile: Profile = REFERENCE,
    ):
        self.uuid = client_uuid
        self.client = client
        self.index = index
        self.prefix = prefix
        self.options = options
        self.timers = timers
        self.clock = clock
        self.profile = profile
        # Seeded per device: the same seed replays the same crashes whatever the fleet size;
        # no seed, no replay. Commands, health on a cadence of its own and the TV draw from
        # their own generators, so that they do not shift the crashes.
        seed = None if options.seed is None else f"{options.seed}:{client_uuid}"
        self.rng = rng or random.Random(seed)
        self.command_rng = random.Random(None if seed is None else f"{seed}:commands")
        self._health_rng = self.rng
        if profile.health_interval is not None:
            self._health_rng = random.Random(None if seed is None else f"{seed}:health")
        tv_rng = random.Random(None if seed is None else f"{seed}:tv")
        self.tv = profile.tv(client_uuid, options, tv_rng)
        self._screen_rng = random.Random(None if seed is None else f"{seed}:screen")
        self.group_id: int | None = None  # from the retained group_id topic, once received
        # The fleet runs callbacks, periodic work and command steps on one thread; the lock
        # keeps a device correct under paho's own network thread too.
        self._lock = threading.Lock()
        self.session = first_session - 1  # incremented by every successful connect
        self.connect_count = 0
        self.reconnect_count = 0
        self.last_disconnect_at: datetime | None = None
        self._online = False  # between a successful CONNACK and the end of that connection
        self.process_status = "running"
        self.restart_count = 0  # player restarts since the boot
        self._crash_left = 0
        self.service_failures = 0
        self.commands_handled = 0
        self.power = POWER_ON
        self.booted_at = clock()
        self._event_number = 0  # position in the playlist, from the screen's own start
        self._black_left = 0  # periodic captures still black in this episode
        self.screenshots_sent = 0
        self._boot = 0  # a step of a command planned before a reboot is void after it
        # command_id -> the last ack sent for it (None until the first), oldest first
        self._commands: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._complete_after_boot: list[str] = []  # reboot_host commands to complete
        self._in_flight: list[Any] = []  # paho's MQTTMessageInfo of QoS 1 messages
        self._link: Link | None = None
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_message = self.on_message
        self._set_will(first_session)

    def topic(self, suffix: str) -> str:
        return device_topic(self.prefix, self.uuid, suffix)

    def _publish(
        self, suffix: str, payload: dict[str, Any], *, qos: int, retain: bool = False
    ) -> Any:
        info = self.client.publish(self.topic(suffix), encode(payload), qos=qos, retain=retain)
        if qos:
            with self._lock:
                if len(self._in_flight) >= 16:
                    self._in_flight = [i for i in self._in_flight if not delivered(i)]
                self._in_flight.append(info)
        return info

    def _sending(self) -> bool:
        """Whether a QoS 1 message still waits for the broker's PUBACK."""
        with self._lock:
            self._in_flight = [i for i in self._in_flight if not delivered(i)]
            return bool(self._in_flight)

    def _set_will(self, session: int) -> None:
        # The broker stores the will at CONNECT time: it always names the session it belongs
        # to, so a late `offline` of an older session never overrides a newer `online`.
        will = encode(status_payload("offline", session))
        self.client.will_set(self.topic("status"), will, qos=1, retain=True)

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected())

    def start(self, link: Link) -> None:
        """Power on: connect through `link`, which also brings the device back after a reboot."""
        self._link = link
        link.connect()

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
            self._online = True
            if self.power == REBOOTING:  # a fresh boot: the player starts clean
                self.power = POWER_ON
                self.process_status, self._crash_left, self.restart_count = "running", 0, 0
                if self.tv is not None:
                    self.tv.boot()
            completed, self._complete_after_boot = self._complete_after_boot, []
        self._publish("status", status_payload("online", session), qos=1, retain=True)
        self._set_will(session + 1)  # used by the next CONNECT
        for suffix in ("commands", *self.profile.subscriptions):
            self.client.subscribe(self.topic(suffix), qos=1)
        self.send_discovery()
        for command_id in completed:  # the reboot is over once we are back
            self._send_ack(self.profile.ack(command_id, "completed"))
            log.info("device %s: back after reboot, command %s completed", self.uuid, command_id)
        self.check_tv()  # after a boot the TV's state is news; after a reconnect only a change

    @guarded
    def on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        # Also called when a connect attempt fails: only the end of a session counts.
        with self._lock:
            was_online, self._online = self._online, False
            if was_online:
                self.last_disconnect_at = self.clock()
        if was_online and getattr(reason_code, "is_failure", False):  # ours is not news
            log.warning("device %s lost its connection: %s", self.uuid, reason_code)

    @guarded
    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self.topic("commands"):
            self.receive_command(message.payload)
        elif message.topic == self.topic(GROUP_ID) and GROUP_ID in self.profile.subscriptions:
            self.receive_group_id(message.payload)

    def receive_group_id(self, payload: bytes) -> None:
        """Keep the group the server assigned: the id as text, or empty for no group."""
        text = payload.decode("utf-8", errors="replace").strip()
        if text and not (text.isascii() and text.isdigit()):
            log.warning("device %s: group_id %r is no group id, ignored", self.uuid, text[:64])
            return
        group_id = int(text) if text else None
        with self._lock:
            changed, self.group_id = group_id != self.group_id, group_id
        level = logging.INFO if changed else logging.DEBUG  # sent again on every resubscribe
        log.log(
            level, "device %s: group_id %s", self.uuid, "none" if group_id is None else group_id
        )

    # commands ------------------------------------------------------------------------------

    def receive_command(self, payload: bytes) -> None:
        """Ack `accepted` (or refuse) at once; the later steps go to the fleet's scheduler.

        A command seen before (QoS 1 redelivery) runs only once: its last ack is sent again.
        An expired command is dropped without an ack, as the deployed clients do; the server
        then marks it `expired`.
        """
        parsed = parse_command(payload, self.uuid, self.profile.actions)
        if parsed is None:
            log.warning("device %s: command without a valid command_id, ignored", self.uuid)
            return
        command_id = parsed.command_id
        last_ack: dict[str, Any] | None = None
        expired = isinstance(parsed, Command) and parsed.expires_at <= self.clock()
        with self._lock:
            if self.power != POWER_ON:  # going down: the player reads no more commands
                return
            seen = command_id in self._commands
            if seen:
                self._commands.move_to_end(command_id)
                last_ack = self._commands[command_id]
            elif not expired:
                self._commands[command_id] = None
                while len(self._commands) > HANDLED_COMMANDS_KEPT:
                    self._commands.popitem(last=False)
        if seen:
            if last_ack is not None:
                self._send_ack(last_ack)
            log.info("device %s: command %s delivered again, not run twice", self.uuid, command_id)
            return
        if isinstance(parsed, Refusal):
            ack = self.profile.ack(
                command_id,
                "failed",
                error_code=parsed.error_code,
                error_message=parsed.error_message,
            )
            self._send_ack(ack)
            log.warning(
                "device %s: command %s refused: %s", self.uuid, command_id, parsed.error_message
            )
            return
        if expired:
            log.info(
                "device %s: command %s expired at %s, dropped",
                self.uuid,
                command_id,
                iso_z(parsed.expires_at),
            )
            return
        self._send_ack(self.profile.ack(command_id, "accepted"))
        with self._lock:
            plan = plan_command(parsed.action, self.options, self.command_rng)
            boot = self._boot
            self.commands_handled += 1
        step = functools.partial(self._start_command, parsed, plan, boot)
        self.timers.call_later(plan.start_after, step)

    def _send_ack(self, ack: dict[str, Any]) -> None:
        with self._lock:
            if ack["command_id"] in self._commands:
                self._commands[ack["command_id"]] = ack
        for suffix in ACK_SUFFIXES:
            self._publish(suffix, ack, qos=1)

    def _still_up(self, boot: int) -> bool:
        with self._lock:
            return self._boot == boot

    def _start_command(self, command: Command, plan: CommandPlan, boot: int) -> None:
        if not self._still_up(boot):  # the host went down meanwhile: the work died with it
            return
        self._send_ack(self.profile.ack(command.command_id, "execution_started"))
        step = functools.partial(self._finish_command, command, plan, boot)
        self.timers.call_later(plan.finish_after, step)

    def _finish_command(self, command: Command, plan: CommandPlan, boot: int) -> None:
        if not self._still_up(boot):
            return
        command_id, action = command.command_id, command.action
        if plan.fails:
            self._send_ack(
                self.profile.ack(
                    command_id,
                    "failed",
                    error_code=SIMULATED_FAILURE,
                    error_message=f"simulated failure of {action} "
                    f"(command failure rate {self.options.command_failure_rate:g})",
                )
            )
        elif action == "restart_app":
            with self._lock:  # a restarted player comes back healthy
                self.process_status, self._crash_left = "running", 0
                self.restart_count += 1
            self._send_ack(self.profile.ack(command_id, "completed"))
        elif action == "reboot_host":
            self._power_off(REBOOTING, complete_after_boot=command_id, back_after=plan.offline_for)
        else:  # shutdown_host: done; off until someone powers the screen on again
            self._send_ack(self.profile.ack(command_id, "completed"))
            self._power_off(SHUT_DOWN)
        log.info(
            "device %s: command %s %s %s",
            self.uuid,
            command_id,
            action,
            "failed" if plan.fails else "going down" if action == "reboot_host" else "completed",
        )

    def _power_off(
        self,
        power: str,
        *,
        complete_after_boot: str | None = None,
        back_after: float = 0.0,
        polls_left: int | None = None,
    ) -> None:
        """The host goes down: no goodbye, the broker publishes the will (`offline`).

        A reboot (`power` REBOOTING) powers on again `back_after` seconds later and then
        completes `complete_after_boot`.
        """
        polls_left = DRAIN_POLLS if polls_left is None else polls_left
        if polls_left > 0 and self._sending():
            retry = functools.partial(
                self._power_off,
                power,
                complete_after_boot=complete_after_boot,
                back_after=back_after,
                polls_left=polls_left - 1,
            )
            self.timers.call_later(DRAIN_POLL_SECONDS, retry)
            return
        with self._lock:
            if self.power != POWER_ON:  # already down (two power actions at once)
                return
            self.power = power
            self._boot += 1
            if complete_after_boot is not None:
                self._complete_after_boot.append(complete_after_boot)
            self._in_flight = []
        if self._link is not None:
            self._link.disconnect(reasoncode=DISCONNECT_WITH_WILL)
        else:  # never started: nothing would reconnect anyway
            self.client.disconnect(reasoncode=DISCONNECT_WITH_WILL)
        if power == REBOOTING:
            self.timers.call_later(back_after, self._power_on)

    def _power_on(self) -> None:
        with self._lock:
            if self.power != REBOOTING:
                return
            self.booted_at = self.clock()
            self._black_left = 0  # a reboot brings the output back
        if self._link is None:
            log.warning("device %s cannot reconnect: it was never started", self.uuid)
            return
        self._link.connect()  # on_connect completes the reboot

    # periodic work, called by the fleet scheduler ------------------------------------------

    @property
    def powered_on(self) -> bool:
        return self.power == POWER_ON

    def send_discovery(self) -> None:
        if not self.powered_on:
            return
        payload = discovery_payload(
            self.uuid,
            hostname=hostname_for(self.index),
            ip=ip_for(self.index),
            software_version=self.options.software_version,
            group_id=self.options.group_id,
        )
        self._publish("discovery", payload, qos=1)

    def send_heartbeat(self) -> None:
        # a real player does not queue liveness it cannot deliver
        if self.powered_on and self.connected:
            self._publish("heartbeat", heartbeat_payload(self.clock()), qos=0)

    def health_tick(self) -> None:
        """One health interval: maybe crash, recover or fail the unit, then report health."""
        if not self.powered_on:  # a host that is down runs no player
            return
        now = self.clock()
        failed = self._advance_process()
        if failed:
            self.service_failures += 1
            self._publish("service_failed", service_failed_payload(now), qos=1, retain=True)
        if self.connected and self.profile.health_interval is None:
            self._publish("health", self._health(now), qos=0)

    def send_health(self) -> None:
        """Health on the profile's own cadence (Profile.health_interval)."""
        if self.powered_on and self.connected:
            self._publish("health", self._health(self.clock()), qos=0)

    def _advance_process(self) -> bool:
        with self._lock:
            if self._crash_left > 0:
                self._crash_left -= 1
                if self._crash_left == 0:  # the watchdog started the player again
                    self.process_status = "running"
                    self.restart_count += 1
            elif self.rng.random() < self.options.crash_rate:
                self.process_status = "crashed"
                self._crash_left = self.rng.randint(*self.options.crash_intervals)
            return self.rng.random() < self.options.service_failed_rate

    def _state(self, now: datetime) -> DeviceState:
        with self._lock:
            running = self.process_status != "crashed"
            return DeviceState(
                index=self.index,
                process_status=self.process_status,
                process_pid=PLAYER_PID + PLAYER_PID_STEP * self.restart_count if running else None,
                restart_count=self.restart_count,
                reconnect_count=self.reconnect_count,
                last_disconnect_at=self.last_disconnect_at,
                event=screen.event_for(self.index, self._event_number),
                uptime_s=max((now - self.booted_at).total_seconds(), 0.0),
            )

    def _health(self, now: datetime) -> dict[str, Any]:
        return self.profile.health(now, self._state(now), self._health_rng)

    def check_tv(self) -> None:
        """Follow the TV schedule, and report a change. Checked only while connected, so that
        no report is lost: a change during an outage is made and reported after it."""
        if self.tv is None or not (self.powered_on and self.connected):
            return
        with self._lock:
            report = self.tv.follow(self.clock())
        if report is not None:
            self._publish("power/state", report, qos=0)
            power = report["power"]
            log.info("device %s: TV %s (%s, %s)", self.uuid, power["applied_state"],
                     power["source"], power["result"])  # fmt: skip

    def send_screenshot(self) -> None:
        """The periodic capture; it may start, or count down, a black episode."""
        with self._lock:
            if self._black_left > 0:
                self._black_left -= 1
            elif self._screen_rng.random() < self.options.black_screen_rate:
                self._black_left = self._screen_rng.randint(*BLACK_CAPTURES)
        self._capture(PERIODIC)

    def change_event(self) -> None:
        """The schedule moves on: a capture as the event stops and one as the next starts."""
        if not self.powered_on:
            return
        self._capture(EVENT_STOP)
        with self._lock:
            self._event_number += 1
        self._capture(EVENT_START)

    def _capture(self, kind: str) -> None:
        if not (self.options.screenshot_interval and self.powered_on and self.connected):
            return
        now = self.clock()
        state = self._state(now)
        with self._lock:
            black = self._black_left > 0
        showing = None if state.process_status == "crashed" else state.event
        jpeg = screen.render_screenshot(
            hostname_for(self.index), now, showing, black, self.options.screenshot_size
        )
        suffix, payload = self.profile.screenshot(self.uuid, Screenshot(kind, now, jpeg), state)
        self.client.publish(self.topic(suffix), payload, qos=1)
        self.screenshots_sent += 1

    def extra_work(self) -> list[Periodic]:
        """The profile's periodic work, besides heartbeat, health tick and discovery."""
        work = []
        if self.profile.health_interval is not None:
            work.append(Periodic("health report", self.profile.health_interval, self.send_health))
        if self.tv is not None:
            work.append(Periodic("tv power", self.tv.check_seconds, self.check_tv))
        interval = self.options.screenshot_interval
        if interval:
            work.append(Periodic("screenshot", interval, self.send_screenshot))
        work.append(Periodic("event change", self.options.event_seconds, self.change_event))
        return work

    def publish_offline(self) -> Any:
        """Graceful goodbye before DISCONNECT (which discards the will): retained `offline`."""
        with self._lock:
            session = max(self.session, 0)
        return self._publish("status", status_payload("offline", session), qos=1, retain=True)

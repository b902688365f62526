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
is asked of the device's `Profile` (simulator.profiles: the reference client and the deployed
ones). The payloads are in simulator.payloads, the fleet's options in simulator.options.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol

from core.clock import Clock, utc_now
from core.contract import device_topic
from simulator import screen
from simulator.device_commands import (
    POWER_ON,
    REBOOTING,
    CommandHandling,
)
from simulator.options import (
    BLACK_CAPTURES,
    DeviceOptions,
)
from simulator.payloads import (
    GROUP_ID,
    delivered,
    discovery_payload,
    encode,
    heartbeat_payload,
    hostname_for,
    ip_for,
    service_failed_payload,
    status_payload,
)
from simulator.profiles import REFERENCE, DeviceState, Profile
from simulator.screen import EVENT_START, EVENT_STOP, PERIODIC, Screenshot

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# The player's process id after a boot; each restart of the player adds a step.
PLAYER_PID = 1187
PLAYER_PID_STEP = 17



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
class Periodic:
    """Work the fleet's scheduler runs for a device every `interval` seconds."""

    name: str
    interval: float
    run: Callable[[], None]




class SimulatedDevice(CommandHandling):
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

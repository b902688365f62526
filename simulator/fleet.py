"""A simulated fleet: many devices, each with its own broker login, one scheduler thread.

Every device has its own paho client (its network loop is paho's); the periodic work of the
whole fleet runs on one thread from a heap of next-due times. `FleetScheduler.step(now)` is
one unit of that work, so tests drive the fleet without threads or sleeps.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import cast

import paho.mqtt.client as mqtt

from core.clock import Clock, utc_now
from core.config import Settings
from mqtt_client import connect_async, make_client
from simulator.device import DeviceOptions, MqttClient, SimulatedDevice

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"
HEALTH = "health"
DISCOVERY = "discovery"
MAX_IDLE_WAIT = 0.5  # seconds; bounds how long a stop request or a new connection waits

ClientFactory = Callable[[str, str], MqttClient]  # (uuid, password) -> unconnected client


def paho_client(client_uuid: str, password: str) -> MqttClient:
    return make_client(client_uuid, username=client_uuid, password=password)


class FleetScheduler:
    """Heartbeat and health of every device, from one heap of (due, seq, kind, device)."""

    def __init__(
        self,
        devices: Sequence[SimulatedDevice],
        options: DeviceOptions,
        *,
        start: float,
        rng: random.Random,
    ):
        self.devices = devices
        self.intervals = {
            HEARTBEAT: options.heartbeat_interval,
            HEALTH: options.health_interval,
            DISCOVERY: options.discovery_interval,
        }
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = 0
        for index in range(len(devices)):
            # First sends spread over one interval, so a fleet never publishes in lockstep.
            for kind, interval in self.intervals.items():
                self._push(start + rng.uniform(0, interval), kind, index)

    def _push(self, due: float, kind: str, index: int) -> None:
        self._seq += 1  # tie-breaker: equal due times keep insertion order
        heapq.heappush(self._heap, (due, self._seq, kind, index))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def step(self, now: float) -> bool:
        """Run the earliest task if it is due at `now`; True when another one is due already."""
        if not self._heap or self._heap[0][0] > now:
            return False
        due, _, kind, index = heapq.heappop(self._heap)
        device = self.devices[index]
        try:
            if kind == HEARTBEAT:
                device.send_heartbeat()
            elif kind == DISCOVERY:
                device.send_discovery()
            else:
                device.health_tick()
        except Exception:
            log.exception("simulated device %s: %s failed", device.uuid, kind)
        interval = self.intervals[kind]
        # Keep the cadence (due + interval) unless we fell a whole interval behind (a suspended
        # machine): then restart from now instead of bursting the missed sends.
        next_due = due + interval
        self._push(next_due if next_due > now else now + interval, kind, index)
        return self._heap[0][0] <= now


class Fleet:
    def __init__(
        self,
        devices: list[SimulatedDevice],
        options: DeviceOptions,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.devices = devices
        self.monotonic = monotonic
        rng = random.Random(options.seed)
        self.scheduler = FleetScheduler(devices, options, start=monotonic(), rng=rng)
        self.started_at: float | None = None

    @classmethod
    def create(
        cls,
        prefix: str,
        credentials: Sequence[tuple[str, str]],
        options: DeviceOptions,
        *,
        clock: Clock = utc_now,
        client_factory: ClientFactory = paho_client,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Fleet:
        # Sessions start at the epoch second, so they also grow across simulator restarts.
        first_session = int(clock().timestamp())
        devices = [
            SimulatedDevice(
                client_uuid,
                client_factory(client_uuid, password),
                index=index,
                prefix=prefix,
                options=options,
                clock=clock,
                first_session=first_session,
            )
            for index, (client_uuid, password) in enumerate(credentials, start=1)
        ]
        return cls(devices, options, monotonic=monotonic)

    def start(self, settings: Settings) -> None:
        self.started_at = self.monotonic()
        for device in self.devices:
            connect_async(cast(mqtt.Client, device.client), settings)
            device.client.loop_start()

    def connected_count(self) -> int:
        return sum(1 for device in self.devices if device.connected)

    def run(self, stop: threading.Event) -> None:
        """The scheduler thread: due work, then wait for the next due time or the stop event."""
        started = self.monotonic() if self.started_at is None else self.started_at
        announced = False
        while not stop.is_set():
            while self.scheduler.step(self.monotonic()):
                pass
            if not announced and self.connected_count() == len(self.devices):
                announced = True
                log.info(
                    "simulated fleet: all %d devices connected in %.1f s",
                    len(self.devices),
                    self.monotonic() - started,
                )
            next_due = self.scheduler.next_due()
            wait = MAX_IDLE_WAIT if next_due is None else next_due - self.monotonic()
            stop.wait(min(max(wait, 0.0), MAX_IDLE_WAIT))

    def stop(self, timeout: float = 5.0) -> None:
        """Say `offline` (retained) for every device, then disconnect it gracefully."""
        pending = [device.publish_offline() for device in self.devices if device.connected]
        deadline = self.monotonic() + timeout
        for info in pending:
            try:
                info.wait_for_publish(max(deadline - self.monotonic(), 0.0))
            except (RuntimeError, ValueError):  # lost the connection meanwhile: the will speaks
                pass
        for device in self.devices:
            device.client.disconnect()
        for device in self.devices:
            device.client.loop_stop()
        log.info("simulated fleet: %d devices stopped", len(self.devices))


def run_fleet(
    settings: Settings,
    devices: list[tuple[str, str]],
    options: DeviceOptions,
    stop: threading.Event,
    *,
    clock: Clock = utc_now,
    client_factory: ClientFactory = paho_client,
) -> None:
    """Run `devices` ((uuid, password) pairs) against the broker until `stop` is set."""
    fleet = Fleet.create(
        settings.mqtt_topic_prefix, devices, options, clock=clock, client_factory=client_factory
    )
    log.info(
        "simulated fleet: starting %d devices against %s:%d",
        len(devices),
        settings.mqtt_host,
        settings.mqtt_port,
    )
    fleet.start(settings)
    try:
        fleet.run(stop)
    finally:
        fleet.stop()

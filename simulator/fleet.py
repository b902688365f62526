"""A simulated fleet: many devices, each with its own broker login, on one thread per process.

Every device has its own paho client, but no paho network thread: the fleet's thread watches
every device's socket on one selector (epoll) and also runs, from one heap of next-due times,
the periodic work of every device and the later steps of the commands it answers. A thousand
devices in one process then cost one thread instead of a thousand contending for the GIL,
and no select() limit on file descriptors applies. `FleetScheduler.step(now)` is one unit of
the timed work, so tests drive the fleet without threads or sleeps.

`run_fleet_processes` splits a fleet over worker processes, to use more than one core.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import multiprocessing as mp
import os
import random
import resource
import selectors
import signal
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from core.clock import Clock, utc_now
from core.config import Settings
from mqtt_client import make_client, tls_context
from simulator.device import MqttClient, Periodic, SimulatedDevice
from simulator.link import Link, broker_addresses
from simulator.options import DeviceOptions
from simulator.payloads import delivered
from simulator.profiles import describe, profiles_for

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"
HEALTH = "health"
DISCOVERY = "discovery"
PERIODIC = "periodic"  # a device's Periodic work
TASK = "task"  # a one-shot task (a step of a command), not periodic
MAX_IDLE_WAIT = 0.5  # seconds; bounds how long a stop request waits
TICK_SECONDS = 1.0  # keep-alive checks of every connection (paho's loop_misc)
STEPS_PER_TURN = 500  # due tasks run before the sockets get their turn again
WORKER_STOP_TIMEOUT = 30.0  # seconds a worker has to say offline and disconnect its devices

ClientFactory = Callable[[str, str], MqttClient]  # (uuid, password) -> unconnected client


def paho_client(client_uuid: str, password: str, tls: ssl.SSLContext | None = None) -> MqttClient:
    return make_client(client_uuid, username=client_uuid, password=password, tls=tls)


def device_client_factory(settings: Settings) -> ClientFactory:
    """Devices log in with uuid and password, over TLS when MQTT_TLS_ENABLED (one context
    shared by the whole fleet)."""
    context = tls_context(settings)
    return paho_client if context is None else functools.partial(paho_client, tls=context)


class FleetScheduler:
    """The fleet's timed work, from one heap of (due, seq, kind, target).

    Periodic entries (heartbeat, health, discovery of one device, and what its profile adds)
    are pushed again after they run. Tasks come from `call_later` (devices call it from their
    paho callbacks) and run once. Times are `monotonic()` seconds; tests pass a fake clock and
    call `step`.
    """

    def __init__(self, options: DeviceOptions, *, monotonic: Callable[[], float] = time.monotonic):
        self.intervals = {
            HEARTBEAT: options.heartbeat_interval,
            HEALTH: options.health_interval,
            DISCOVERY: options.discovery_interval,
        }
        self.monotonic = monotonic
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()  # tie-breaker: equal due times keep insertion order
        self._lock = threading.Lock()  # in case a task comes from another thread

    def add_device(self, device: SimulatedDevice, *, start: float, rng: random.Random) -> None:
        work = [
            Periodic(HEARTBEAT, self.intervals[HEARTBEAT], device.send_heartbeat),
            Periodic(HEALTH, self.intervals[HEALTH], device.health_tick),
            Periodic(DISCOVERY, self.intervals[DISCOVERY], device.send_discovery),
            *device.extra_work(),
        ]
        # First runs spread over one interval, so a fleet never publishes in lockstep.
        for periodic in work:
            self._push(start + rng.uniform(0, periodic.interval), PERIODIC, (device, periodic))

    def call_later(self, delay: float, task: Callable[[], None]) -> None:
        """Run `task` once, `delay` seconds from now, on the fleet's thread."""
        self._push(self.monotonic() + max(delay, 0.0), TASK, task)

    def _push(self, due: float, kind: str, target: Any) -> None:
        with self._lock:
            heapq.heappush(self._heap, (due, next(self._seq), kind, target))

    def next_due(self) -> float | None:
        with self._lock:
            return self._heap[0][0] if self._heap else None

    def step(self, now: float) -> bool:
        """Run the earliest entry if it is due at `now`; True when another one is due already."""
        with self._lock:
            if not self._heap or self._heap[0][0] > now:
                return False
            due, _, kind, target = heapq.heappop(self._heap)
        if kind == TASK:
            try:
                target()
            except Exception:
                log.exception("simulated fleet: task %r failed", target)
        else:
            device, periodic = target
            self._run_periodic(device, periodic)
            interval = periodic.interval
            # Keep the cadence (due + interval) unless we fell a whole interval behind (a
            # suspended machine): then restart from now instead of bursting the missed sends.
            next_due = due + interval
            self._push(next_due if next_due > now else now + interval, kind, target)
        with self._lock:
            return bool(self._heap) and self._heap[0][0] <= now

    @staticmethod
    def _run_periodic(device: SimulatedDevice, periodic: Periodic) -> None:
        try:
            periodic.run()
        except Exception:
            log.exception("simulated device %s: %s failed", device.uuid, periodic.name)




class Fleet:
    def __init__(
        self,
        devices: list[SimulatedDevice],
        scheduler: FleetScheduler,
        *,
        seed: int | None = None,
    ):
        self.devices = devices
        self.scheduler = scheduler
        self.monotonic = scheduler.monotonic
        self.selector = selectors.DefaultSelector()
        self.links = [Link(device.client, self.selector, scheduler) for device in devices]
        rng = random.Random(seed)
        start = self.monotonic()
        for device in devices:
            scheduler.add_device(device, start=start, rng=rng)
        self.started_at: float | None = None
        self._next_tick = start

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
        first_index: int = 1,
    ) -> Fleet:
        """Devices numbered from `first_index` (their hostnames), not connected yet. Their
        profiles follow `options.profile_mix` by fleet position, so a worker process of a
        split fleet gives each of its devices the profile it has in one process."""
        scheduler = FleetScheduler(options, monotonic=monotonic)
        # Sessions start at the epoch second, so they also grow across simulator restarts.
        first_session = int(clock().timestamp())
        profiles = profiles_for(options.profile_mix, first_index - 1, len(credentials))
        devices = [
            SimulatedDevice(
                client_uuid,
                client_factory(client_uuid, password),
                index=index,
                prefix=prefix,
                options=options,
                timers=scheduler,
                clock=clock,
                first_session=first_session,
                profile=profile,
            )
            for (index, (client_uuid, password)), profile in zip(
                enumerate(credentials, start=first_index), profiles, strict=True
            )
        ]
        return cls(devices, scheduler, seed=options.seed)

    def start(self, settings: Settings) -> None:
        """Connect every device (a TCP connect each; CONNACKs are read by `turn`)."""
        self.started_at = self.monotonic()
        addresses = broker_addresses(settings)
        for device, link in zip(self.devices, self.links, strict=True):
            link.settings, link.addresses = settings, addresses
            device.start(link)

    def connected_count(self) -> int:
        return sum(1 for device in self.devices if device.connected)

    def turn(self, max_wait: float = MAX_IDLE_WAIT) -> None:
        """One turn of the fleet's thread: the due timed work, the keep-alive checks once a
        second, then the sockets that are ready, waiting for them until the next due time (at
        most `max_wait` seconds)."""
        now = self.monotonic()
        for _ in range(STEPS_PER_TURN):
            if not self.scheduler.step(now):
                break
        if now >= self._next_tick:
            self._next_tick = now + TICK_SECONDS
            for link in self.links:
                link.tick()
        next_due = self.scheduler.next_due()
        wait = min(max_wait, self._next_tick - now)
        if next_due is not None:
            wait = min(wait, next_due - now)
        self._poll(max(wait, 0.0))

    def _poll(self, timeout: float) -> None:
        for key, events in self.selector.select(timeout):
            key.data.handle(events)

    def run(self, stop: threading.Event) -> None:
        """The fleet's thread, until `stop` is set."""
        started = self.monotonic() if self.started_at is None else self.started_at
        announce_check = started
        while not stop.is_set():
            self.turn()
            if announce_check is not None and self.monotonic() >= announce_check:
                announce_check += 1.0
                if self.connected_count() == len(self.devices):
                    announce_check = None
                    log.info(
                        "simulated fleet: all %d devices connected in %.1f s",
                        len(self.devices),
                        self.monotonic() - started,
                    )

    def stop(self, timeout: float = 5.0) -> None:
        """Say `offline` (retained) for every device, then disconnect it gracefully."""
        deadline = time.monotonic() + timeout
        pending = [device.publish_offline() for device in self.devices if device.connected]
        while not all(delivered(info) for info in pending) and time.monotonic() < deadline:
            self._poll(0.05)  # the broker's PUBACKs: the goodbye is stored before we go
        for link in self.links:
            link.disconnect()
        while self.selector.get_map() and time.monotonic() < deadline:
            self._poll(0.05)  # paho closes each socket once its DISCONNECT is written
        for link in self.links:
            link.close()
        self.selector.close()
        log.info("simulated fleet: %d devices stopped", len(self.devices))


def ensure_file_limit(devices: int) -> None:
    """A socket per device: raise the soft limit of open files when the fleet needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = devices + 64  # and the process's own files
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning(
                "simulated fleet: %d devices need %d open files, the limit is %d; "
                "split the fleet with --processes",
                devices,
                needed,
                hard,
            )


def run_fleet(
    settings: Settings,
    devices: list[tuple[str, str]],
    options: DeviceOptions,
    stop: threading.Event,
    *,
    clock: Clock = utc_now,
    client_factory: ClientFactory | None = None,
    first_index: int = 1,
) -> None:
    """Run `devices` ((uuid, password) pairs) against the broker until `stop` is set."""
    ensure_file_limit(len(devices))
    client_factory = client_factory or device_client_factory(settings)
    fleet = Fleet.create(
        settings.mqtt_topic_prefix,
        devices,
        options,
        clock=clock,
        client_factory=client_factory,
        first_index=first_index,
    )
    log.info(
        "simulated fleet: starting %d devices (%s) against %s:%d%s",
        len(devices),
        describe(device.profile for device in fleet.devices),
        settings.mqtt_host,
        settings.mqtt_port,
        " (TLS)" if settings.mqtt_tls_enabled else "",
    )
    try:
        fleet.start(settings)
        fleet.run(stop)
    finally:
        fleet.stop()


# Several processes -----------------------------------------------------------------------


def split_fleet(
    devices: Sequence[tuple[str, str]], processes: int
) -> list[tuple[int, list[tuple[str, str]]]]:
    """Contiguous, balanced slices, each with the index of its first device (hostnames stay
    the same as in one process)."""
    processes = max(1, min(processes, len(devices)))
    bounds = [len(devices) * n // processes for n in range(processes + 1)]
    return [(bounds[n] + 1, list(devices[bounds[n] : bounds[n + 1]])) for n in range(processes)]


def run_fleet_processes(
    settings: Settings,
    devices: list[tuple[str, str]],
    options: DeviceOptions,
    stop: threading.Event,
    *,
    processes: int,
) -> bool:
    """Run the fleet split over `processes` worker processes until `stop` is set.

    Every worker runs `run_fleet` on its slice. On `stop`, or when a worker dies, every worker
    gets SIGTERM and says `offline` for its devices before it exits. Returns False when a worker
    died or had to be killed. One process runs the fleet in this process.
    """
    slices = split_fleet(devices, processes)
    if len(slices) == 1:
        run_fleet(settings, devices, options, stop)
        return True
    ctx = mp.get_context("spawn")  # no fork of a process that may hold threads and sockets
    workers = [
        ctx.Process(
            target=_fleet_worker,
            args=(settings, chunk, options, first_index, os.getpid()),
            name=f"simulator-{number}",
        )
        for number, (first_index, chunk) in enumerate(slices, start=1)
    ]
    log.info("simulated fleet: %d devices in %d processes", len(devices), len(workers))
    for worker in workers:
        worker.start()
    healthy = True
    try:
        while not stop.wait(MAX_IDLE_WAIT):
            dead = [w for w in workers if not w.is_alive()]
            if dead:
                log.error(
                    "simulated fleet: %s exited with code %s; stopping the others",
                    dead[0].name,
                    dead[0].exitcode,
                )
                healthy = False
                break
    finally:
        healthy = _stop_workers(workers) and healthy
    return healthy


def _stop_workers(workers: list[Any]) -> bool:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: the worker's fleet says offline and disconnects
    deadline = time.monotonic() + WORKER_STOP_TIMEOUT
    clean = True
    for worker in workers:
        worker.join(max(deadline - time.monotonic(), 0.0))
        if worker.is_alive():
            log.warning("simulated fleet: %s did not stop in time, killed", worker.name)
            worker.kill()
            worker.join()
            clean = False
    return clean


def _fleet_worker(
    settings: Settings,
    devices: list[tuple[str, str]],
    options: DeviceOptions,
    first_index: int,
    parent_pid: int,
) -> None:
    """One worker process: its slice of the fleet until SIGTERM or until the parent is gone."""
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s[%(processName)s]: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches us too: the parent decides

    def watch_parent() -> None:  # a parent killed with SIGKILL leaves no one to stop us
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                log.warning("simulated fleet: parent process gone, stopping")
                stop.set()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    run_fleet(settings, devices, options, stop, first_index=first_index)

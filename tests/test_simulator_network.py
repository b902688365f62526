"""The simulated fleet's network: every device on one selector per process, connects that never
hold the fleet's thread, reconnects after a broker restart, and a fleet split over worker
processes that SIGTERM or Ctrl-C stops cleanly. On a throwaway Mosquitto: the fleet leaves
retained presence that other tests should never see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from core.config import Settings
from infoscreen.dev import find_mosquitto
from simulator.credentials import write_credentials
from simulator.fleet import Fleet, run_fleet, split_fleet
from simulator.options import DeviceOptions
from tests.brokers import Login, broker_with_devices
from tests.brokers import TestBroker as ThrowawayBroker  # not a test class
from tests.helpers import free_port, wait_until

PREFIX = "infoscreen"
QUIET = {"crash_rate": 0.0, "service_failed_rate": 0.0}


def test_a_split_fleet_keeps_every_device_once_with_its_number():
    devices = [(str(uuid.UUID(int=n + 1)), f"pw-{n}") for n in range(10)]
    slices = split_fleet(devices, 3)
    assert [len(chunk) for _, chunk in slices] == [3, 3, 4]
    assert [first for first, _ in slices] == [1, 4, 7]  # hostnames as in one process
    assert [d for _, chunk in slices for d in chunk] == devices
    assert split_fleet(devices[:2], 8) == [(1, devices[:1]), (2, devices[1:2])]


def test_a_device_connects_without_holding_the_fleets_thread():
    # Nobody listens on the port: the connect is refused, but only after `start` returned.
    settings = Settings.model_validate({"MQTT_HOST": "127.0.0.1", "MQTT_PORT": free_port()})
    screen = (str(uuid.uuid4()), "pw-unused")
    fleet = Fleet.create(PREFIX, [screen], DeviceOptions(**QUIET))
    [link] = fleet.links
    attempts: list[Any] = []
    connecting = link.client._create_socket_connection  # the hook paho's reconnect calls

    def counted() -> Any:
        attempts.append(connecting())
        return attempts[-1]

    link.client._create_socket_connection = counted  # type: ignore[method-assign]
    try:
        fleet.start(settings)
        assert len(attempts) == 1 and link.sock is attempts[0]  # under way, not refused yet

        def turn_until(condition: Any) -> bool:
            fleet.turn(max_wait=0.05)
            return bool(condition())

        wait_until(lambda: turn_until(lambda: link.sock is None), timeout=5, message="refused")
        assert not fleet.devices[0].connected and fleet.devices[0].last_disconnect_at is None
        # Back-off, then the next attempt, as paho's own loop would do.
        wait_until(lambda: turn_until(lambda: len(attempts) >= 2), timeout=5,
                   message="another attempt")  # fmt: skip
    finally:
        fleet.stop(timeout=1)


needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


@dataclass
class FleetBroker:
    broker: ThrowawayBroker
    screens: list[Login]

    def settings(self) -> Settings:
        return Settings.model_validate(
            {"MQTT_HOST": self.broker.host, "MQTT_PORT": self.broker.device_port}
        )


@pytest.fixture(scope="module")
def fleet_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetBroker]:
    with broker_with_devices(tmp_path_factory.mktemp("fleet-broker"), 2) as (broker, screens):
        yield FleetBroker(broker, screens)


class Presence:
    """The server's view of the screens' status and discovery; it resubscribes on reconnect."""

    def __init__(self, broker: ThrowawayBroker):
        self.messages: list[tuple[str, str, dict[str, Any]]] = []  # (uuid, suffix, payload)
        self.subscribed = threading.Event()
        self.client = broker.client(broker.server)
        self.client.on_connect = self._subscribe
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._keep
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, timeout=5, message="SUBACK")

    def _subscribe(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(f"{PREFIX}/+/status", 1), (f"{PREFIX}/+/discovery", 1)])

    def _keep(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        _, screen, suffix = message.topic.split("/", 2)
        if message.payload:
            self.messages.append((screen, suffix, json.loads(message.payload)))

    def status(self, screen: str) -> dict[str, Any] | None:
        said = [p for s, suffix, p in list(self.messages) if s == screen and suffix == "status"]
        return said[-1] if said else None

    def online(self, screens: list[str]) -> bool:
        return all((self.status(s) or {}).get("status") == "online" for s in screens)

    def offline(self, screens: list[str]) -> bool:
        return all((self.status(s) or {}).get("status") == "offline" for s in screens)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.broker
@needs_mosquitto
def test_a_fleet_comes_back_after_the_broker_restarts(fleet_broker):
    screen = fleet_broker.screens[0]
    presence = Presence(fleet_broker.broker)
    stop = threading.Event()
    fleet = threading.Thread(
        target=run_fleet,
        args=(fleet_broker.settings(), [(screen.username, screen.password)],
              DeviceOptions(**QUIET), stop),
        daemon=True,
    )  # fmt: skip
    fleet.start()
    try:
        wait_until(lambda: presence.online([screen.username]), timeout=10, message="online")
        session = presence.status(screen.username)["session"]
        fleet_broker.broker.restart()
        wait_until(
            lambda: (presence.status(screen.username) or {}).get("session") == session + 1,
            timeout=20,
            message="online again in the next session",
        )
        assert presence.status(screen.username) == {"status": "online", "session": session + 1}
    finally:
        stop.set()
        fleet.join(timeout=15)
        presence.close()
    assert not fleet.is_alive()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.broker
@needs_mosquitto
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_every_worker_process_and_each_says_offline(
    fleet_broker, tmp_path, stop_signal
):
    screens = [s.username for s in fleet_broker.screens]
    credentials = tmp_path / "devices.json"
    write_credentials(credentials, [(s.username, s.password) for s in fleet_broker.screens])
    presence = Presence(fleet_broker.broker)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MQTT_HOST": fleet_broker.broker.host,
        "MQTT_PORT": str(fleet_broker.broker.device_port),
        "BROKER_DIR": str(fleet_broker.broker.directory),
    }
    argv = ["simulate", "--clients", "2", "--credentials", str(credentials), "--processes", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "infoscreen", *argv],
        env=env,
        cwd=tmp_path,  # no .env of the checkout
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        def hostnames() -> dict[str, str]:
            return {s: p["hostname"] for s, suffix, p in list(presence.messages)
                    if suffix == "discovery"}

        # Presence comes first; each screen's discovery follows it.
        wait_until(lambda: presence.online(screens) and set(screens) <= set(hostnames()),
                   timeout=30, message="both screens online and discovered")
        workers = children(proc.pid)
        assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
        # Numbered as in one process, though each worker has one device.
        hostnames = hostnames()
        assert sorted(hostnames[s] for s in screens) == ["sim-screen-001", "sim-screen-002"]

        proc.send_signal(stop_signal)
        assert proc.wait(timeout=40) == 0, proc.stderr.read() if proc.stderr else ""
        wait_until(lambda: presence.offline(screens), timeout=5, message="both offline")
        wait_until(lambda: all(gone(pid) for pid in workers), timeout=10, message="workers gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        presence.close()

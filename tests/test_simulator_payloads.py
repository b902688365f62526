"""The simulator speaks contract v1: device payloads, callbacks, the scheduler's steps, the
load generator's MQTT bytes, the CLI's credentials; then, on a throwaway Mosquitto, the load
generator's QoS 1 run and a small fleet's heartbeats."""

from __future__ import annotations

import argparse
import json
import re
import stat
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.config import Settings
from core.contract import (
    COMMAND_ACK,
    DISCOVERY,
    HEALTH,
    HEARTBEAT,
    SERVICE_FAILED,
    STATUS,
    Message,
    parse_message,
)
from infoscreen.dev import find_mosquitto
from mosquitto.accounts import AccountStore
from simulator import cli, credentials, loadgen, wire
from simulator.device import SimulatedDevice
from simulator.fleet import Fleet, FleetScheduler, run_fleet
from simulator.options import DeviceOptions
from simulator.payloads import (
    ack_payload,
    discovery_payload,
    health_payload,
    heartbeat_payload,
    service_failed_payload,
    status_payload,
)
from tests.brokers import Login, broker_with_devices
from tests.brokers import TestBroker as ThrowawayBroker  # not a test class
from tests.helpers import wait_until

PREFIX = "infoscreen"
NOW = datetime(2025, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)
SCREEN = "5f0c6f3e-8a55-4d0b-9a43-2b1c1e0a7d21"
COMMAND = "0b8f2a4c-6d1e-4f3a-9b7c-5e2d1a0c9f87"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def topic(suffix: str, client_uuid: str = SCREEN) -> str:
    return f"{PREFIX}/{client_uuid}/{suffix}"


def assert_valid(topic_: str, payload: dict[str, Any] | bytes, kind: str) -> Message:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    parsed = parse_message(topic_, raw, NOW, prefix=PREFIX)
    assert isinstance(parsed, Message), parsed
    assert parsed.kind == kind
    return parsed


# Payloads ---------------------------------------------------------------------------------

DEVICE_PAYLOADS = [
    ("discovery", discovery_payload(SCREEN, hostname="sim-screen-007", ip="10.77.0.8"), DISCOVERY),
    (
        "discovery",
        discovery_payload(SCREEN, hostname="sim-screen-007", ip="10.77.0.8", group_id="lobby"),
        DISCOVERY,
    ),
    ("heartbeat", heartbeat_payload(NOW), HEARTBEAT),
    (
        "health",
        health_payload(
            NOW,
            process_status="running",
            cpu_percent=12.34,
            memory_percent=41.0,
            reconnect_count=0,
            last_disconnect_at=None,
        ),
        HEALTH,
    ),
    (
        "health",
        health_payload(
            NOW,
            process_status="crashed",
            cpu_percent=0.5,
            memory_percent=30.0,
            reconnect_count=3,
            last_disconnect_at=NOW - timedelta(minutes=5),
        ),
        HEALTH,
    ),
    ("service_failed", service_failed_payload(NOW), SERVICE_FAILED),
    ("status", status_payload("online", 7), STATUS),
    ("status", status_payload("offline", 7), STATUS),
    *[
        (suffix, ack_payload(COMMAND, status), COMMAND_ACK)
        for suffix in ("commands/ack", "command/ack")
        for status in ("accepted", "execution_started", "completed")
    ],
    (
        "commands/ack",
        ack_payload(COMMAND, "failed", error_code="unsupported_action", error_message="no"),
        COMMAND_ACK,
    ),
]


@pytest.mark.parametrize(("suffix", "payload", "kind"), DEVICE_PAYLOADS)
def test_every_device_payload_validates_against_the_contract(suffix, payload, kind):
    assert_valid(topic(suffix), payload, kind)


def test_health_reports_the_broker_connection_figures():
    payload = health_payload(
        NOW,
        process_status="running",
        cpu_percent=1,
        memory_percent=2,
        reconnect_count=2,
        last_disconnect_at=NOW,
    )
    parsed = assert_valid(topic("health"), payload, HEALTH)
    assert parsed.payload.broker_connection.reconnect_count == 2
    assert parsed.payload.broker_connection.last_disconnect_at == NOW


@pytest.mark.parametrize("kind", wire.KINDS)
def test_the_load_generators_payloads_validate_once_timestamped(kind):
    raw = wire.payload_template(kind).replace(
        wire.TIMESTAMP_HOLE.encode(), wire.format_timestamp()
    )
    parsed = assert_valid(topic(wire.topic_of(kind)), raw, wire.topic_of(kind))
    if kind == "health-2025":  # the deployed shape: no timestamp, the status below actual_state
        assert parsed.payload.timestamp is None
        assert parsed.payload.reported_process_status() == "running"
        assert parsed.payload.broker_connection.last_disconnect_at.tzinfo is not None
    else:
        assert parsed.payload.timestamp.tzinfo is not None


# One device and its callbacks (a fake client, paho's callback signatures) ---------------


@dataclass
class Sent:
    topic: str
    payload: dict[str, Any]
    qos: int
    retain: bool


class FakeInfo:
    def __init__(self) -> None:
        self.published = True  # the broker's PUBACK is in

    def wait_for_publish(self, timeout: float | None = None) -> None:
        return None

    def is_published(self) -> bool:
        return self.published


class FakeClient:
    """Records what a device asks of paho."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.infos: list[FakeInfo] = []  # one per message sent
        self.subscriptions: list[tuple[str, int]] = []
        self.will: Sent | None = None
        self.connected = True
        self.broken = False
        self.disconnect_reason: Any = None
        self.on_connect = self.on_disconnect = self.on_message = None

    def will_set(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False):
        self.will = Sent(topic, json.loads(payload), qos, retain)

    def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False):
        if self.broken:
            raise RuntimeError("the network thread's bad day")
        self.sent.append(Sent(topic, json.loads(payload), qos, retain))
        self.infos.append(FakeInfo())
        return self.infos[-1]

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self.subscriptions.append((topic, qos))

    def is_connected(self) -> bool:
        return self.connected

    def disconnect(self, reasoncode: Any = None) -> None:
        self.connected = False
        self.disconnect_reason = reasoncode

    def loop_start(self) -> None: ...

    def loop_stop(self) -> None: ...

    def to(self, suffix: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic(suffix)]


class PinnedClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class FakeMonotonic:
    """The scheduler's monotonic clock, moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_device(**options: Any) -> tuple[SimulatedDevice, FakeClient, PinnedClock]:
    client, clock = FakeClient(), PinnedClock()
    device_options = DeviceOptions(seed=1, **options)
    device = SimulatedDevice(
        SCREEN,
        client,
        index=7,
        prefix=PREFIX,
        options=device_options,
        timers=FleetScheduler(device_options, monotonic=FakeMonotonic()),
        clock=clock,
        first_session=100,
    )
    return device, client, clock


def connack(reason: str = "Success") -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, reason)


def connect(device: SimulatedDevice, client: FakeClient, reason: str = "Success") -> None:
    # The exact positional call paho makes with CallbackAPIVersion.VERSION2.
    client.on_connect(client, None, mqtt.ConnectFlags(session_present=False), connack(reason), None)


def lose_connection(device: SimulatedDevice, client: FakeClient) -> None:
    flags = mqtt.DisconnectFlags(is_disconnect_packet_from_server=False)
    reason = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    client.on_disconnect(client, None, flags, reason, None)


def command(payload: bytes) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(topic=topic("commands").encode())
    message.payload = payload
    return message


def test_it_announces_itself_on_connect():
    device, client, _ = make_device()
    connect(device, client)
    [online] = client.to("status")
    assert online == Sent(topic("status"), {"status": "online", "session": 100}, 1, True)
    assert client.subscriptions == [(topic("commands"), 1)]
    [discovery] = client.to("discovery")
    assert discovery.qos == 1 and not discovery.retain
    assert discovery.payload["hostname"] == "sim-screen-007"
    assert_valid(discovery.topic, discovery.payload, DISCOVERY)
    # The will stored with the next CONNECT names the next session.
    assert client.will == Sent(topic("status"), {"status": "offline", "session": 101}, 1, True)


def test_its_first_will_names_its_first_session():
    _, client, _ = make_device()
    assert client.will == Sent(topic("status"), {"status": "offline", "session": 100}, 1, True)


def test_it_counts_reconnects_and_reports_them_in_health():
    device, client, clock = make_device(crash_rate=0.0, service_failed_rate=0.0)
    connect(device, client)
    clock.now = NOW + timedelta(seconds=42)
    lose_connection(device, client)
    clock.now = NOW + timedelta(seconds=50)
    connect(device, client)
    device.health_tick()

    assert [s.payload["session"] for s in client.to("status")] == [100, 101]
    [health] = client.to("health")
    assert health.payload["broker_connection"] == {
        "reconnect_count": 1,
        "last_disconnect_at": "2025-03-14T09:27:35.589Z",
    }
    assert_valid(health.topic, health.payload, HEALTH)


def test_a_refused_connection_is_not_a_session():
    device, client, _ = make_device()
    connect(device, client, reason="Not authorized")
    assert client.sent == [] and device.connect_count == 0


def test_no_exception_escapes_a_callback():
    device, client, _ = make_device()
    client.broken = True
    connect(device, client)  # publish raises inside; paho's thread must never see it
    body = json.dumps({"command_id": COMMAND, "action": "reboot_host"}).encode()
    client.on_message(client, None, command(body))
    client.on_message(client, None, None)


def test_a_crash_lasts_a_few_health_intervals():
    device, client, _ = make_device(crash_rate=1.0, crash_intervals=(2, 2))
    for _ in range(3):
        device.health_tick()
    statuses = [h.payload["process_status"] for h in client.to("health")]
    assert statuses == ["crashed", "crashed", "running"]


def test_a_service_failure_is_retained_with_qos_1():
    device, client, _ = make_device(crash_rate=0.0, service_failed_rate=1.0)
    device.health_tick()
    [failure] = client.to("service_failed")
    assert failure.qos == 1 and failure.retain
    assert failure.payload["unit"] == "infoscreen-player.service"
    assert_valid(failure.topic, failure.payload, SERVICE_FAILED)


def test_the_same_seed_replays_the_same_crashes():
    def crashes(seed: int | None) -> list[str]:
        client = FakeClient()
        options = DeviceOptions(crash_rate=0.3, seed=seed)
        timers = FleetScheduler(options)
        device = SimulatedDevice(
            SCREEN, client, index=1, prefix=PREFIX, options=options, timers=timers
        )
        for _ in range(40):
            device.health_tick()
        return [h.payload["process_status"] for h in client.to("health")]

    assert crashes(11) == crashes(11)
    assert len({tuple(crashes(None)) for _ in range(3)}) > 1  # unseeded runs differ


def test_it_sends_no_heartbeat_while_disconnected():
    device, client, _ = make_device()
    client.connected = False
    device.send_heartbeat()
    assert client.sent == []


# The fleet's scheduler, one step at a time ---------------------------------------------


def make_fleet(size: int, **options: Any) -> tuple[Fleet, list[FakeClient]]:
    clients: list[FakeClient] = []

    def factory(client_uuid: str, password: str) -> FakeClient:
        clients.append(FakeClient())
        return clients[-1]

    credentials = [(str(uuid.UUID(int=i + 1)), "pw") for i in range(size)]
    fleet = Fleet.create(
        PREFIX,
        credentials,
        DeviceOptions(seed=3, **options),
        clock=PinnedClock(),
        client_factory=factory,
        monotonic=lambda: 1000.0,
    )
    return fleet, clients


def run_due(fleet: Fleet, now: float) -> None:
    while fleet.scheduler.step(now):
        pass


def count(clients: list[FakeClient], suffix: str) -> list[int]:
    return [sum(s.topic.endswith("/" + suffix) for s in c.sent) for c in clients]


def test_the_scheduler_spreads_first_heartbeats_over_one_interval():
    fleet, clients = make_fleet(20, heartbeat_interval=10.0, health_interval=60.0)
    assert not fleet.scheduler.step(999.0)  # nothing is due before the fleet starts
    run_due(fleet, 1005.0)
    assert 0 < sum(count(clients, "heartbeat")) < 20
    run_due(fleet, 1009.999)
    assert count(clients, "heartbeat") == [1] * 20


def test_the_scheduler_keeps_each_devices_cadence():
    fleet, clients = make_fleet(5, heartbeat_interval=10.0, health_interval=30.0)
    for second in range(1000, 1061):
        run_due(fleet, float(second) - 1e-6)
    assert count(clients, "heartbeat") == [6] * 5
    assert count(clients, "health") == [2] * 5


def test_the_scheduler_does_not_burst_after_a_long_pause():
    fleet, clients = make_fleet(3, heartbeat_interval=10.0, health_interval=600.0)
    run_due(fleet, 1010.0)
    run_due(fleet, 1500.0)  # the machine slept for eight minutes
    assert count(clients, "heartbeat") == [2] * 3


def test_a_failing_device_does_not_stop_the_scheduler():
    fleet, clients = make_fleet(3, heartbeat_interval=10.0, health_interval=60.0)
    clients[0].broken = True
    run_due(fleet, 1010.0)
    assert count(clients, "heartbeat")[1:] == [1, 1]


def test_stopping_a_fleet_says_offline_for_every_connected_device():
    fleet, clients = make_fleet(3)
    for device, client in zip(fleet.devices, clients, strict=True):
        connect(device, client)
    clients[2].connected = False
    fleet.stop(timeout=1)
    session = int(NOW.timestamp())  # sessions start at the epoch second
    last_said = [[s.payload for s in c.sent if s.topic.endswith("/status")][-1] for c in clients]
    assert last_said[:2] == [{"status": "offline", "session": session}] * 2
    assert last_said[2] == {"status": "online", "session": session}  # its will speaks for it
    assert not any(c.connected for c in clients)


# The load generator's bytes ---------------------------------------------------------------


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def read_string(data: bytes, offset: int) -> tuple[bytes, int]:
    (size,) = struct.unpack_from("!H", data, offset)
    return data[offset + 2 : offset + 2 + size], offset + 2 + size


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455])
def test_variable_byte_integers_round_trip(value):
    encoded = wire.encode_varint(value)
    assert read_varint(encoded, 0) == (value, len(encoded))
    assert wire.decode_varint(encoded, 0) == (value, len(encoded))
    assert wire.decode_varint(encoded[:-1], 0) is None


def test_connect_is_a_valid_mqtt5_connect():
    packet = wire.encode_connect("gen-1", "loadgen", "s3cret-password", keepalive=60)
    assert packet[0] == 0x10
    length, offset = read_varint(packet, 1)
    assert length == len(packet) - offset
    name, offset = read_string(packet, offset)
    assert name == b"MQTT"
    level, flags = packet[offset], packet[offset + 1]
    assert level == 5
    assert flags == 0x80 | 0x40 | 0x02  # username, password, clean start; no will
    assert struct.unpack_from("!H", packet, offset + 2) == (60,)
    assert packet[offset + 4] == 0  # no properties
    offset += 5
    fields = []
    for _ in range(3):
        value, offset = read_string(packet, offset)
        fields.append(value)
    assert fields == [b"gen-1", b"loadgen", b"s3cret-password"]
    assert offset == len(packet)


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("kind", wire.KINDS)
def test_a_rendered_publish_is_valid_mqtt5(qos, kind):
    suffix = wire.topic_of(kind)
    template = wire.publish_template(topic(suffix), kind, qos)
    stamp = wire.format_timestamp()
    packet = template.render(stamp, packet_id=65535)

    assert packet[0] >> 4 == 3 and (packet[0] >> 1) & 3 == qos and not packet[0] & 1
    length, offset = read_varint(packet, 1)
    assert length == len(packet) - offset
    name, offset = read_string(packet, offset)
    assert name.decode() == topic(suffix)
    if qos:
        assert struct.unpack_from("!H", packet, offset) == (65535,)
        offset += 2
    assert packet[offset] == 0  # no properties
    payload = packet[offset + 1 :]
    assert stamp in payload
    assert_valid(name.decode(), payload, suffix)
    assert packet == wire.encode_publish(topic(suffix), payload, qos=qos, packet_id=65535)


def test_a_connack_gives_the_brokers_limits():
    props = (
        bytes([0x21]) + struct.pack("!H", 20)  # receive maximum
        + bytes([0x24, 1])  # maximum QoS
        + bytes([0x1F]) + struct.pack("!H", 2) + b"ok"  # reason string
        + bytes([0x26]) + struct.pack("!H", 1) + b"k" + struct.pack("!H", 1) + b"v"
    )  # fmt: skip
    body = bytes([0, 0]) + wire.encode_varint(len(props)) + props
    reason, parsed = wire.parse_connack(body)
    assert reason == 0
    assert parsed[wire.RECEIVE_MAXIMUM] == 20
    assert parsed[wire.MAXIMUM_QOS] == 1
    assert parsed[wire.REASON_STRING] == b"ok"


def test_client_ids_are_distinct_valid_and_reproducible():
    ids = loadgen.client_ids(10_000, "bench")
    assert len(set(ids)) == 10_000
    assert all(UUID_RE.match(i) for i in ids)
    assert loadgen.client_ids(10_000, "bench") == ids
    assert not set(loadgen.client_ids(100, "other")) & set(ids)


@pytest.mark.parametrize(
    "overrides",
    [{"rate": 0}, {"duration": -1}, {"qos": 2}, {"connections": 0}, {"kinds": ("selfie",)}],
)
def test_run_load_rejects_impossible_requests_before_connecting(overrides):
    arguments: dict[str, Any] = {
        "prefix": PREFIX,
        "client_ids": loadgen.client_ids(4),
        "rate": 10.0,
        "duration": 1.0,
        "qos": 1,
        "connections": 2,
    } | overrides
    with pytest.raises(ValueError):
        loadgen.run_load("127.0.0.1", 9, "loadgen", "password-1234", **arguments)


# The CLI's credentials ------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infoscreen simulate")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def cli_settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"BROKER_DIR": str(tmp_path / "broker")})


def test_simulate_refuses_a_missing_credentials_file(tmp_path, capsys):
    missing = tmp_path / "devices.json"
    assert cli.main(cli_settings(tmp_path), parse("--credentials", str(missing))) != 0
    error = capsys.readouterr().err
    assert str(missing) in error and "--provision" in error


def test_provision_creates_the_missing_devices_and_their_accounts(tmp_path):
    settings, path = cli_settings(tmp_path), tmp_path / "var" / "devices.json"
    first = credentials.provision(settings, path, 2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = credentials.provision(settings, path, 3)
    assert second[:2] == first and len(second) == 3
    assert credentials.load_credentials(path, 3) == second
    accounts = AccountStore(settings.broker_dir).load()
    assert {u for u, _ in second} <= set(accounts)
    assert {accounts[u].role for u, _ in second} == {"device"}
    with pytest.raises(credentials.CredentialsError, match=re.escape(str(path))):
        credentials.load_credentials(path, 4)


def test_load_mode_needs_a_simulator_account(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIMULATOR_USER", raising=False)
    monkeypatch.delenv("SIMULATOR_PASSWORD", raising=False)
    assert cli.main(cli_settings(tmp_path), parse("--load", "100")) == cli.EXIT_USAGE
    assert "SIMULATOR_USER" in capsys.readouterr().err


# On a real broker -------------------------------------------------------------------------

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


@dataclass
class SimBroker:
    broker: ThrowawayBroker
    screens: list[Login]

    def settings(self) -> Settings:
        return Settings.model_validate(
            {
                "MQTT_HOST": self.broker.host,
                "MQTT_PORT": self.broker.device_port,
                "BROKER_DIR": str(self.broker.directory),
            }
        )


@pytest.fixture(scope="module")
def sim_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimBroker]:
    with broker_with_devices(tmp_path_factory.mktemp("sim-broker"), 3) as (broker, screens):
        yield SimBroker(broker, screens)


class Collector:
    """A server-role subscriber that keeps every message it receives."""

    def __init__(self, broker: ThrowawayBroker, filters: list[str]):
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = broker.client(broker.server)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in filters])
        wait_until(self.subscribed.is_set, timeout=5, message="SUBACK")

    def uuids(self, suffix: str, payload_check=lambda payload: True) -> set[str]:
        return {
            t.split("/")[1]
            for t, p in list(self.messages)
            if t.endswith("/" + suffix) and payload_check(p)
        }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.broker
@needs_mosquitto
def test_the_load_generator_gets_every_qos1_message_acknowledged(sim_broker):
    broker = sim_broker.broker
    result = loadgen.run_load(
        broker.host,
        broker.port,
        broker.simulator.username,
        broker.simulator.password,
        prefix=PREFIX,
        client_ids=loadgen.client_ids(1000, "test"),
        rate=2000,
        duration=1.0,
        qos=1,
        connections=2,
    )
    assert result.sent == 2000
    assert result.acked == result.sent and result.rejected == 0
    assert 1800 <= result.achieved_rate <= 2200


@pytest.mark.broker
@needs_mosquitto
def test_the_load_generator_counts_publishes_the_acl_denies(sim_broker):
    # A device account may only write its own topics: every PUBACK says 0x87.
    screen = sim_broker.screens[0]
    result = loadgen.run_load(
        sim_broker.broker.host,
        sim_broker.broker.device_port,
        screen.username,
        screen.password,
        prefix=PREFIX,
        client_ids=loadgen.client_ids(10, "denied"),
        rate=200,
        duration=0.5,
        qos=1,
        connections=1,
    )
    assert result.sent == 100 and result.rejected == 100 and result.acked == 0


@pytest.mark.broker
@needs_mosquitto
def test_a_wrong_password_is_a_clear_load_error(sim_broker):
    broker = sim_broker.broker
    # Mosquitto 2.0 answers a wrong password with 0x87 (not authorized), not 0x86.
    with pytest.raises(loadgen.LoadError, match="broker refused the login"):
        loadgen.run_load(
            broker.host,
            broker.port,
            broker.simulator.username,
            "not-the-password",
            prefix=PREFIX,
            client_ids=loadgen.client_ids(2),
            rate=10,
            duration=0.5,
            connections=1,
        )


@pytest.mark.broker
@needs_mosquitto
def test_a_small_fleet_heartbeats_and_says_goodbye(sim_broker):
    collector = Collector(sim_broker.broker, [f"{PREFIX}/+/heartbeat", f"{PREFIX}/+/status"])
    screens = {s.username for s in sim_broker.screens}
    stop = threading.Event()
    options = DeviceOptions(
        heartbeat_interval=0.2, health_interval=0.5, crash_rate=0, service_failed_rate=0, seed=5
    )
    devices = [(s.username, s.password) for s in sim_broker.screens]
    fleet = threading.Thread(
        target=run_fleet, args=(sim_broker.settings(), devices, options, stop), daemon=True
    )
    fleet.start()
    try:
        wait_until(
            lambda: collector.uuids("heartbeat") >= screens, timeout=15, message="heartbeats"
        )
        for topic_, payload in list(collector.messages):
            if topic_.endswith("/heartbeat"):
                assert_valid(topic_, payload, HEARTBEAT)
    finally:
        stop.set()
        fleet.join(timeout=15)
    assert not fleet.is_alive()

    def offline(payload: bytes) -> bool:
        return json.loads(payload)["status"] == "offline"

    wait_until(lambda: collector.uuids("status", offline) >= screens, timeout=5, message="offline")
    collector.close()

"""A simulated screen answers commands like a deployed one: accepted at once, execution_started,
then completed or failed; reboot_host drops the connection and completes after the reconnect;
shutdown_host stays off; expired, foreign and malformed commands are dropped or refused; a
redelivered command runs once. The steps run on a real FleetScheduler driven by a fake clock;
the last test does the reboot on a throwaway Mosquitto."""

from __future__ import annotations

import argparse
import json
import math
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.clock import iso_z, utc_now
from core.config import Settings
from core.contract import COMMAND_ACK, STATUS
from infoscreen.dev import find_mosquitto
from simulator import cli, credentials, device_commands
from simulator.device import SimulatedDevice
from simulator.device_commands import DISCONNECT_WITH_WILL, REBOOTING, SHUT_DOWN
from simulator.fleet import FleetScheduler, run_fleet
from simulator.options import (
    DRAIN_POLL_SECONDS,
    DRAIN_POLLS,
    FAILURE_SECONDS,
    POWER_DOWN_SECONDS,
    REBOOT_OFFLINE_SECONDS,
    RESTART_APP_SECONDS,
    START_SECONDS,
    DeviceOptions,
    plan_command,
)
from simulator.payloads import COMMAND_KEYS, Command, parse_command
from tests.brokers import Login, broker_with_devices
from tests.brokers import TestBroker as ThrowawayBroker  # not a test class
from tests.helpers import wait_until
from tests.test_simulator_payloads import (
    COMMAND,
    NOW,
    PREFIX,
    SCREEN,
    FakeClient,
    FakeMonotonic,
    PinnedClock,
    assert_valid,
    command,
    connect,
    topic,
)

OTHER_SCREEN = "9d3b1f7a-2c4e-4b8d-a6f0-1e2d3c4b5a69"
START = 1000.0  # the fake monotonic clock's start


def command_body(action: str = "restart_app", **changes: Any) -> dict[str, Any]:
    """A command exactly as the server sends it (contract v1, eight keys)."""
    body = {
        "schema_version": "1.0",
        "command_id": COMMAND,
        "client_uuid": SCREEN,
        "action": action,
        "issued_at": iso_z(NOW),
        "expires_at": iso_z(NOW + timedelta(minutes=5)),
        "requested_by": "operator.jane",
        "reason": "player crashed",
    }
    body.update(changes)
    return body


class ScreenClient(FakeClient):
    """A fake paho client that notes when it sent what, and reports its own DISCONNECT to
    on_disconnect as paho does."""

    def __init__(self, monotonic: FakeMonotonic) -> None:
        super().__init__()
        self.monotonic = monotonic
        self.sent_at: list[float] = []
        self.disconnected_at: float | None = None

    def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False):
        info = super().publish(topic, payload, qos, retain)
        self.sent_at.append(self.monotonic())
        return info

    def disconnect(self, reasoncode: Any = None) -> None:
        super().disconnect(reasoncode)
        self.disconnected_at = self.monotonic()
        flags = mqtt.DisconnectFlags(is_disconnect_packet_from_server=False)
        normal = ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection")
        self.on_disconnect(self, None, flags, normal, None)


class FakeLink:
    """The fleet's connection keeping: notes when the device asks to connect."""

    def __init__(self, client: ScreenClient) -> None:
        self.client = client
        self.connects: list[float] = []

    def connect(self) -> None:
        self.connects.append(self.client.monotonic())

    def disconnect(self, reasoncode: Any = None) -> None:
        self.client.disconnect(reasoncode)


class Screen:
    """One connected device; its later steps run on a real FleetScheduler with a fake clock."""

    def __init__(self, **options: Any) -> None:
        self.monotonic = FakeMonotonic(START)
        self.clock = PinnedClock()
        self.client = ScreenClient(self.monotonic)
        self.options = DeviceOptions(seed=1, crash_rate=0.0, service_failed_rate=0.0, **options)
        self.scheduler = FleetScheduler(self.options, monotonic=self.monotonic)
        self.device = SimulatedDevice(
            SCREEN,
            self.client,
            index=7,
            prefix=PREFIX,
            options=self.options,
            timers=self.scheduler,
            clock=self.clock,
            first_session=100,
        )
        self.link = FakeLink(self.client)
        self.device.start(self.link)
        self.connack()

    @property
    def connect_requests(self) -> list[float]:
        return self.link.connects

    def connack(self) -> None:
        """The broker accepted the connection that the device asked for."""
        self.client.connected = True
        connect(self.device, self.client)

    def receive(self, body: dict[str, Any] | bytes) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.on_message(self.client, None, command(raw))

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, running every task as it falls due."""
        end = self.monotonic.now + seconds
        while (due := self.scheduler.next_due()) is not None and due <= end:
            self.monotonic.now = max(self.monotonic.now, due)
            self.scheduler.step(self.monotonic.now)
        self.monotonic.now = end

    def acks(self, suffix: str = "commands/ack") -> list[str]:
        return [s.payload["status"] for s in self.client.to(suffix)]

    def ack_times(self, status: str) -> list[float]:
        return [
            at
            for at, sent in zip(self.client.sent_at, self.client.sent, strict=True)
            if sent.topic == topic("commands/ack") and sent.payload["status"] == status
        ]

    def sent_since(self, at: float) -> list[str]:
        return [
            sent.topic.removeprefix(f"{PREFIX}/{SCREEN}/")
            for when, sent in zip(self.client.sent_at, self.client.sent, strict=True)
            if when >= at
        ]


def assert_acks_valid(screen: Screen) -> None:
    for suffix in ("commands/ack", "command/ack"):
        for sent in screen.client.to(suffix):
            assert sent.qos == 1 and not sent.retain
            assert_valid(sent.topic, sent.payload, COMMAND_ACK)


# Reading a command ------------------------------------------------------------------------


def test_it_reads_a_command_with_exactly_the_eight_keys():
    parsed = parse_command(json.dumps(command_body("reboot_host")).encode(), SCREEN)
    assert parsed == Command(
        command_id=COMMAND,
        action="reboot_host",
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        requested_by="operator.jane",
        reason="player crashed",
    )
    assert set(command_body()) == set(COMMAND_KEYS)


def test_it_reads_the_client_uuid_in_any_case():
    body = command_body(client_uuid=SCREEN.upper())
    assert isinstance(parse_command(json.dumps(body).encode(), SCREEN), Command)


def without(key: str) -> dict[str, Any]:
    body = command_body()
    del body[key]
    return body


REFUSED = [
    pytest.param(command_body(priority="high"), "invalid_command", "'priority'", id="unknown key"),
    pytest.param(without("reason"), "invalid_command", "missing reason", id="missing key"),
    pytest.param(command_body(schema_version="2.0"), "unsupported_schema_version", "'2.0'",
                 id="schema version"),
    pytest.param(command_body(client_uuid=OTHER_SCREEN), "wrong_client", OTHER_SCREEN,
                 id="another client"),
    pytest.param(command_body(client_uuid=None), "wrong_client", "None", id="no client"),
    pytest.param(command_body("format_disk"), "unsupported_action", "'format_disk'",
                 id="unsupported action"),
    pytest.param(command_body(expires_at="tomorrow"), "invalid_command", "ISO 8601",
                 id="expiry not a time"),
    pytest.param(command_body(issued_at=1741944413), "invalid_command", "ISO 8601",
                 id="issue time a number"),
    pytest.param(command_body(requested_by=["jane"]), "invalid_command", "strings",
                 id="requested_by not text"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "error_code", "detail"), REFUSED)
def test_it_rejects_a_malformed_command_with_failed_and_runs_nothing(body, error_code, detail):
    screen = Screen()
    screen.receive(body)
    for suffix in ("commands/ack", "command/ack"):
        [ack] = screen.client.to(suffix)
        assert ack.payload["command_id"] == COMMAND
        assert ack.payload["status"] == "failed"
        assert ack.payload["error_code"] == error_code
        assert detail in ack.payload["error_message"]
    assert_acks_valid(screen)
    assert screen.scheduler.next_due() is None  # no step planned
    assert screen.device.commands_handled == 0


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"action": "reboot_host"}',
        b'{"command_id": "x"}',
        json.dumps(command_body(command_id="not-a-uuid")).encode(),
    ],
)
def test_it_ignores_a_command_it_cannot_ack(payload):
    screen = Screen()
    before = len(screen.client.sent)
    screen.receive(payload)
    assert len(screen.client.sent) == before
    assert screen.scheduler.next_due() is None


def test_it_drops_an_expired_command_without_an_ack():
    screen = Screen()
    before = len(screen.client.sent)
    screen.receive(command_body("reboot_host", expires_at=iso_z(NOW - timedelta(seconds=1))))
    screen.advance(600)
    assert len(screen.client.sent) == before
    assert screen.device.commands_handled == 0 and screen.client.connected


def test_it_ignores_messages_on_other_topics():
    screen = Screen()
    before = len(screen.client.sent)
    message = mqtt.MQTTMessage(topic=topic("commands", OTHER_SCREEN).encode())
    message.payload = json.dumps(command_body(client_uuid=OTHER_SCREEN)).encode()
    screen.client.on_message(screen.client, None, message)
    assert len(screen.client.sent) == before


# The lifecycle of each action -------------------------------------------------------------


def test_it_acks_accepted_at_once_and_the_later_steps_from_the_scheduler():
    screen = Screen()
    screen.receive(command_body("restart_app"))
    assert screen.acks() == screen.acks("command/ack") == ["accepted"]
    assert screen.ack_times("accepted") == [START]

    screen.advance(START_SECONDS[1])
    assert screen.acks() == ["accepted", "execution_started"]
    screen.advance(RESTART_APP_SECONDS[1])
    for suffix in ("commands/ack", "command/ack"):
        assert screen.acks(suffix) == ["accepted", "execution_started", "completed"]
    assert_acks_valid(screen)


def test_restart_app_completes_one_to_three_seconds_after_it_started():
    screen = Screen()
    screen.receive(command_body("restart_app"))
    screen.advance(10)
    [started], [completed] = screen.ack_times("execution_started"), screen.ack_times("completed")
    assert START_SECONDS[0] <= started - START <= START_SECONDS[1]
    assert RESTART_APP_SECONDS[0] <= completed - started <= RESTART_APP_SECONDS[1]


def test_restart_app_brings_a_crashed_player_back():
    screen = Screen()
    screen.device.options = DeviceOptions(crash_rate=1.0, crash_intervals=(5, 5), seed=1)
    screen.device.health_tick()
    assert screen.device.process_status == "crashed"
    screen.receive(command_body("restart_app"))
    screen.advance(5)
    assert screen.device.process_status == "running"


def test_a_high_speed_answers_restart_app_within_milliseconds():
    screen = Screen(speed=1000)
    screen.receive(command_body("restart_app"))
    screen.advance(0.004)
    assert screen.acks() == ["accepted", "execution_started", "completed"]


def test_reboot_host_drops_the_connection_and_completes_after_reconnecting():
    screen = Screen()
    screen.receive(command_body("reboot_host"))
    screen.advance(START_SECONDS[1] + POWER_DOWN_SECONDS[1])

    # Down: no goodbye of its own (the broker publishes the will), nothing completed yet.
    assert screen.acks() == ["accepted", "execution_started"]
    assert screen.client.disconnect_reason == DISCONNECT_WITH_WILL
    assert screen.client.disconnect_reason.value == 0x04
    assert [s.payload["status"] for s in screen.client.to("status")] == ["online"]
    assert screen.device.power == REBOOTING
    down_at = screen.client.disconnected_at
    assert down_at is not None
    assert down_at - screen.ack_times("execution_started")[0] <= POWER_DOWN_SECONDS[1]

    screen.advance(down_at + REBOOT_OFFLINE_SECONDS[0] - 0.001 - screen.monotonic.now)
    assert screen.connect_requests == [START]  # only the first connect so far
    screen.advance(REBOOT_OFFLINE_SECONDS[1] - REBOOT_OFFLINE_SECONDS[0])
    [_, back_at] = screen.connect_requests
    assert REBOOT_OFFLINE_SECONDS[0] <= back_at - down_at <= REBOOT_OFFLINE_SECONDS[1]
    assert screen.sent_since(down_at) == []  # a host that is down says nothing
    assert screen.acks() == ["accepted", "execution_started"]

    screen.connack()
    # A new session, announced as on any connect, and only then the outcome.
    assert screen.sent_since(back_at) == [
        "status",
        "discovery",
        "commands/ack",
        "command/ack",
    ]
    assert screen.client.to("status")[-1].payload == {"status": "online", "session": 101}
    assert screen.client.will.payload == {"status": "offline", "session": 102}
    for suffix in ("commands/ack", "command/ack"):
        assert screen.acks(suffix) == ["accepted", "execution_started", "completed"]
    assert_acks_valid(screen)


def test_a_rebooting_screen_lets_its_last_acks_reach_the_broker_first(monkeypatch):
    # Else paho would send them again after the reboot, which a rebooted host cannot do.
    monkeypatch.setattr(device_commands, "DRAIN_POLLS", 1000)  # ten seconds: no giving up here
    screen = Screen()
    screen.receive(command_body("reboot_host"))
    screen.advance(START_SECONDS[1])
    for info in screen.client.infos[-2:]:  # execution_started, on both topics
        info.published = False
    screen.advance(POWER_DOWN_SECONDS[1] + 0.5)
    assert screen.client.connected  # waits for the PUBACKs
    for info in screen.client.infos[-2:]:
        info.published = True
    screen.advance(DRAIN_POLL_SECONDS)
    assert not screen.client.connected and screen.device.power == REBOOTING


def test_a_rebooting_screen_waits_for_its_acks_no_longer_than_about_a_second():
    screen = Screen()
    screen.receive(command_body("reboot_host"))
    screen.advance(START_SECONDS[1])
    screen.client.infos[-1].published = False  # the PUBACK never comes
    screen.advance(POWER_DOWN_SECONDS[1] + DRAIN_POLLS * DRAIN_POLL_SECONDS + 0.01)
    assert not screen.client.connected and screen.device.power == REBOOTING


def test_a_rebooted_screen_reports_the_reconnect_in_its_health():
    screen = Screen()
    screen.receive(command_body("reboot_host"))
    screen.advance(START_SECONDS[1] + POWER_DOWN_SECONDS[1] + REBOOT_OFFLINE_SECONDS[1])
    screen.clock.now = NOW + timedelta(minutes=2)
    screen.connack()
    screen.device.health_tick()
    [health] = screen.client.to("health")
    assert health.payload["process_status"] == "running"
    assert health.payload["broker_connection"] == {
        "reconnect_count": 1,
        "last_disconnect_at": iso_z(NOW),  # the pinned clock at the power-down
    }


def test_a_screen_that_is_down_sends_no_telemetry():
    screen = Screen()
    screen.device.options = DeviceOptions(crash_rate=1.0, service_failed_rate=1.0, seed=1)
    screen.receive(command_body("reboot_host"))
    screen.advance(START_SECONDS[1] + POWER_DOWN_SECONDS[1])
    down_at = screen.client.disconnected_at
    assert down_at is not None
    screen.device.health_tick()
    screen.device.send_heartbeat()
    screen.device.send_discovery()
    screen.receive(command_body("restart_app", command_id=str(uuid.uuid4())))
    assert screen.sent_since(down_at) == []


def test_shutdown_host_completes_then_stays_offline():
    screen = Screen()
    screen.receive(command_body("shutdown_host"))
    screen.advance(START_SECONDS[1] + POWER_DOWN_SECONDS[1])
    assert screen.acks() == ["accepted", "execution_started", "completed"]
    assert screen.client.disconnect_reason == DISCONNECT_WITH_WILL
    assert screen.ack_times("completed")[0] <= screen.client.disconnected_at
    assert screen.device.power == SHUT_DOWN

    said = len(screen.client.sent)
    screen.advance(24 * 3600)
    screen.device.health_tick()
    assert screen.connect_requests == [START]  # nobody powers it on during the run
    assert len(screen.client.sent) == said


@pytest.mark.parametrize("action", ["restart_app", "reboot_host", "shutdown_host"])
def test_a_failing_command_ends_in_failed_after_execution_started(action):
    screen = Screen(command_failure_rate=1.0)
    screen.receive(command_body(action))
    screen.advance(START_SECONDS[1] + FAILURE_SECONDS[1])
    for suffix in ("commands/ack", "command/ack"):
        assert screen.acks(suffix) == ["accepted", "execution_started", "failed"]
    [failed] = [s.payload for s in screen.client.to("commands/ack")][2:]
    assert failed["error_code"] == "simulated_failure"
    assert action in failed["error_message"]
    assert_acks_valid(screen)
    assert screen.client.connected and screen.client.disconnect_reason is None  # still up


def test_the_failure_rate_is_the_share_of_commands_that_fail():
    rng = random.Random(7)
    options = DeviceOptions(command_failure_rate=0.25)
    plans = [plan_command("restart_app", options, rng) for _ in range(4000)]
    share = sum(plan.fails for plan in plans) / len(plans)
    assert 0.22 <= share <= 0.28
    assert not any(plan_command("reboot_host", DeviceOptions(), rng).fails for _ in range(200))


@pytest.mark.parametrize("speed", [1.0, 10.0, 1000.0])
def test_the_speed_divides_every_duration(speed):
    rng = random.Random(3)
    options = DeviceOptions(speed=speed)
    for _ in range(200):
        restart = plan_command("restart_app", options, rng)
        reboot = plan_command("reboot_host", options, rng)
        shutdown = plan_command("shutdown_host", options, rng)
        for plan in (restart, reboot, shutdown):
            assert START_SECONDS[0] <= plan.start_after * speed <= START_SECONDS[1]
        assert RESTART_APP_SECONDS[0] <= restart.finish_after * speed <= RESTART_APP_SECONDS[1]
        assert POWER_DOWN_SECONDS[0] <= reboot.finish_after * speed <= POWER_DOWN_SECONDS[1]
        low, high = REBOOT_OFFLINE_SECONDS
        assert low <= reboot.offline_for * speed <= high
        assert restart.offline_for == shutdown.offline_for == 0


# Redelivery -------------------------------------------------------------------------------


def test_a_redelivered_command_runs_once_and_repeats_its_last_ack():
    screen = Screen()
    screen.receive(command_body("restart_app"))
    screen.advance(START_SECONDS[1])
    screen.receive(command_body("restart_app"))  # QoS 1 redelivery
    assert screen.acks() == ["accepted", "execution_started", "execution_started"]
    screen.advance(RESTART_APP_SECONDS[1])
    screen.receive(command_body("restart_app"))
    screen.advance(60)
    assert screen.acks() == [
        "accepted",
        "execution_started",
        "execution_started",
        "completed",
        "completed",
    ]
    assert screen.device.commands_handled == 1


def test_a_redelivered_reboot_does_not_reboot_twice():
    screen = Screen(speed=100)
    screen.receive(command_body("reboot_host"))
    screen.advance(2)
    screen.connack()
    screen.receive(command_body("reboot_host"))
    screen.advance(5)
    assert len(screen.connect_requests) == 2  # the first connect and one reboot
    assert screen.client.connected
    assert screen.acks() == ["accepted", "execution_started", "completed", "completed"]


def test_a_redelivered_refusal_is_refused_again_without_running():
    screen = Screen()
    screen.receive(command_body("format_disk"))
    screen.receive(command_body("format_disk"))
    assert screen.acks() == ["failed", "failed"]
    assert screen.scheduler.next_due() is None


def test_it_forgets_the_oldest_command_ids_beyond_its_memory(monkeypatch):
    monkeypatch.setattr(device_commands, "HANDLED_COMMANDS_KEPT", 3)
    screen = Screen(speed=1000)
    ids = [str(uuid.UUID(int=n + 1)) for n in range(4)]
    for command_id in ids:
        screen.receive(command_body("restart_app", command_id=command_id))
    screen.advance(1)
    screen.receive(command_body("restart_app", command_id=ids[0]))  # forgotten: runs again
    screen.receive(command_body("restart_app", command_id=ids[3]))  # remembered
    screen.advance(1)
    assert screen.device.commands_handled == 5
    completed = [s.payload["command_id"] for s in screen.client.to("commands/ack")
                 if s.payload["status"] == "completed"]  # fmt: skip
    assert sorted(completed) == sorted([*ids, ids[0], ids[3]])


# Options and the command line -------------------------------------------------------------


@pytest.mark.parametrize("speed", [0.0, -1.0, math.nan, math.inf])
def test_it_rejects_a_speed_that_is_not_a_positive_number(speed):
    with pytest.raises(ValueError, match="speed must be a finite number greater than 0"):
        DeviceOptions(speed=speed)


@pytest.mark.parametrize("rate", [-0.1, 1.5, math.nan])
def test_it_rejects_a_command_failure_rate_outside_0_and_1(rate):
    with pytest.raises(ValueError, match="command_failure_rate is a probability between 0 and 1"):
        DeviceOptions(command_failure_rate=rate)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infoscreen simulate")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--speed", "0"), "must be greater than 0"),
        (("--command-failure-rate", "2"), "is a probability between 0 and 1"),
        (("--processes", "0"), "must be at least 1"),
    ],
)
def test_simulate_rejects_impossible_command_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    error = capsys.readouterr().err
    assert argv[0] in error and message in error


def test_simulate_hands_speed_failure_rate_and_processes_to_the_fleet(tmp_path, monkeypatch):
    path = tmp_path / "devices.json"
    credentials.write_credentials(path, [(SCREEN, "pw-123456"), (OTHER_SCREEN, "pw-654321")])
    seen: list[tuple[DeviceOptions, int]] = []

    def run(settings, devices, options, stop, *, processes):
        seen.append((options, processes))
        return True

    monkeypatch.setattr(cli, "run_fleet_processes", run)
    settings = Settings.model_validate({"BROKER_DIR": str(tmp_path / "broker")})
    args = parse("--clients", "2", "--credentials", str(path), "--speed", "1000",
                 "--command-failure-rate", "0.25", "--processes", "2")  # fmt: skip
    assert cli.main(settings, args) == 0
    [(options, processes)] = seen
    assert options.speed == 1000 and options.command_failure_rate == 0.25
    assert processes == 2


def test_simulate_refuses_an_infinite_speed(tmp_path, capsys):
    path = tmp_path / "devices.json"
    credentials.write_credentials(path, [(SCREEN, "pw-123456")])
    settings = Settings.model_validate({"BROKER_DIR": str(tmp_path / "broker")})
    args = parse("--credentials", str(path), "--clients", "1", "--speed", "inf")
    assert cli.main(settings, args) == cli.EXIT_USAGE
    assert "speed must be a finite number" in capsys.readouterr().err


# The scheduler's one-shot tasks -----------------------------------------------------------


def test_tasks_run_once_in_due_order_when_due():
    monotonic = FakeMonotonic(START)
    scheduler = FleetScheduler(DeviceOptions(), monotonic=monotonic)
    ran: list[str] = []
    scheduler.call_later(2.0, lambda: ran.append("second"))
    scheduler.call_later(1.0, lambda: ran.append("first"))
    scheduler.call_later(-5.0, lambda: ran.append("now"))  # a negative delay means now
    assert scheduler.step(START) is False and ran == ["now"]
    assert scheduler.step(START + 1.5) is False and ran == ["now", "first"]
    assert scheduler.step(START + 1.9) is False and ran == ["now", "first"]
    assert scheduler.step(START + 2.0) is False and ran == ["now", "first", "second"]
    assert scheduler.next_due() is None


def test_a_failing_task_does_not_stop_the_scheduler():
    monotonic = FakeMonotonic(START)
    scheduler = FleetScheduler(DeviceOptions(), monotonic=monotonic)
    ran: list[str] = []
    scheduler.call_later(0, lambda: 1 / 0)
    scheduler.call_later(0, lambda: ran.append("next"))
    while scheduler.step(START):
        pass
    assert ran == ["next"]


# On a real broker -------------------------------------------------------------------------

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


@pytest.fixture(scope="module")
def command_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ThrowawayBroker, Login]]:
    with broker_with_devices(tmp_path_factory.mktemp("command-broker"), 1) as (broker, [screen]):
        yield broker, screen


class Watcher:
    """The server's view of one screen: every message it sends, in arrival order."""

    def __init__(self, broker: ThrowawayBroker, screen: str):
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = threading.Event()
        self.client = broker.client(broker.server)
        self.client.on_message = self._keep
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{PREFIX}/{screen}/#", qos=1)
        wait_until(self.subscribed.is_set, timeout=5, message="SUBACK")

    def _keep(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        suffix = message.topic.split("/", 2)[2]
        if message.payload and suffix != "commands":
            self.messages.append((suffix, json.loads(message.payload)))

    def position(self, suffix: str, **fields: Any) -> int | None:
        for number, (seen, payload) in enumerate(list(self.messages)):
            if seen == suffix and fields.items() <= payload.items():
                return number
        return None

    def has(self, suffix: str, **fields: Any) -> bool:
        return self.position(suffix, **fields) is not None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.broker
@needs_mosquitto
def test_a_screen_reboots_on_command_and_completes_after_reconnecting(command_broker):
    broker, screen = command_broker
    watcher = Watcher(broker, screen.username)
    settings = Settings.model_validate(
        {"MQTT_HOST": broker.host, "MQTT_PORT": broker.device_port,
         "BROKER_DIR": str(broker.directory)}
    )
    options = DeviceOptions(
        heartbeat_interval=60, health_interval=0.2, crash_rate=0, service_failed_rate=0,
        speed=200, seed=9,
    )  # fmt: skip
    stop = threading.Event()
    fleet = threading.Thread(
        target=run_fleet,
        args=(settings, [(screen.username, screen.password)], options, stop),
        daemon=True,
    )
    fleet.start()
    try:
        wait_until(lambda: watcher.has("status", status="online"), timeout=10,
                   message="the screen online")  # fmt: skip
        [(_, online)] = [m for m in watcher.messages if m[0] == "status"]
        session = online["session"]

        now = utc_now()
        body = command_body(
            "reboot_host",
            command_id=str(uuid.uuid4()),
            client_uuid=screen.username,
            issued_at=iso_z(now),
            expires_at=iso_z(now + timedelta(minutes=5)),
        )
        server = broker.client(broker.server)
        server.connect(broker.host, broker.port)
        server.loop_start()
        try:
            info = server.publish(f"{PREFIX}/{screen.username}/commands", json.dumps(body), qos=1)
            info.wait_for_publish(timeout=5)
        finally:
            server.disconnect()
            server.loop_stop()

        command_id = body["command_id"]
        wait_until(lambda: watcher.has("commands/ack", status="completed"), timeout=15,
                   message="completed after the reboot")  # fmt: skip
        wait_until(lambda: reconnect_reported(watcher), timeout=5,
                   message="health with the reconnect")  # fmt: skip
    finally:
        stop.set()
        fleet.join(timeout=15)
        watcher.close()
    assert not fleet.is_alive()

    for suffix in ("commands/ack", "command/ack"):
        acks = [p for s, p in watcher.messages if s == suffix]
        assert [a["status"] for a in acks] == ["accepted", "execution_started", "completed"]
        assert {a["command_id"] for a in acks} == {command_id}
        for ack in acks:
            assert_valid(f"{PREFIX}/{screen.username}/{suffix}", ack, COMMAND_ACK)
    started = watcher.position("commands/ack", status="execution_started")
    will = watcher.position("status", status="offline", session=session)
    back = watcher.position("status", status="online", session=session + 1)
    discovery_again = [n for n, (s, _) in enumerate(watcher.messages) if s == "discovery"][1]
    completed = watcher.position("commands/ack", status="completed")
    assert started is not None and will is not None and back is not None
    assert started < will < back < discovery_again < completed
    assert_valid(f"{PREFIX}/{screen.username}/status", watcher.messages[will][1], STATUS)


def reconnect_reported(watcher: Watcher) -> bool:
    return any(
        suffix == "health"
        and payload["broker_connection"]["reconnect_count"] == 1
        and payload["broker_connection"]["last_disconnect_at"] is not None
        for suffix, payload in list(watcher.messages)
    )

"""The infoscreen-2025 profile speaks like the deployed clients: health every 5 s in their shape,
acks with both error keys always, only the frozen v1 actions, TV power reports that follow a
local-time schedule on an injected clock, and the retained group_id kept. Then how a fleet
mixes profiles, the command line, and on a throwaway Mosquitto one deployed screen end to end.
"""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from core.clock import iso_z, utc_now
from core.config import Settings
from core.contract import COMMAND_ACK, HEALTH, POWER_STATE
from infoscreen.dev import SIM_PROFILE_MIX, find_mosquitto, sim_profiles
from simulator import cli, credentials
from simulator.device import SimulatedDevice
from simulator.fleet import Fleet, FleetScheduler
from simulator.options import DeviceOptions
from simulator.payloads import ack_payload
from simulator.profiles import (
    INFOSCREEN_2025,
    PROFILES,
    REFERENCE,
    deployed_ack_payload,
    describe,
    parse_mix,
    profiles_for,
)
from simulator.tv import in_standby, parse_standby
from tests.brokers import Login, broker_with_devices
from tests.brokers import TestBroker as ThrowawayBroker  # not a test class
from tests.helpers import wait_until
from tests.test_simulator_commands import FakeLink, Screen, ScreenClient, command_body
from tests.test_simulator_payloads import (
    COMMAND,
    NOW,
    PREFIX,
    SCREEN,
    FakeClient,
    FakeMonotonic,
    PinnedClock,
    assert_valid,
    lose_connection,
    topic,
)

START = 1000.0
DEPLOYED_MIX = (("infoscreen-2025", 1),)
HEALTH_KEYS = {"expected_state", "actual_state", "health_metrics", "broker_connection"}


class DeployedScreen(Screen):
    """Screen (test_simulator_commands) with the infoscreen-2025 profile, its TV on UTC."""

    def __init__(self, **options: Any) -> None:
        self.monotonic = FakeMonotonic(START)
        self.clock = PinnedClock()
        self.client = ScreenClient(self.monotonic)
        options = {"crash_rate": 0.0, "service_failed_rate": 0.0, "tv_timezone": "UTC"} | options
        self.options = DeviceOptions(seed=1, **options)
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
            profile=INFOSCREEN_2025,
        )
        self.link = FakeLink(self.client)
        self.device.start(self.link)
        self.connack()

    def payloads(self, suffix: str) -> list[dict[str, Any]]:
        return [sent.payload for sent in self.client.to(suffix)]

    def at(self, when: datetime) -> None:
        self.clock.now = when

    def group_id(self, payload: bytes) -> None:
        message = mqtt.MQTTMessage(topic=topic("group_id").encode())
        message.payload = payload
        self.client.on_message(self.client, None, message)


# Health -----------------------------------------------------------------------------------


def test_deployed_health_has_the_deployed_shape_and_validates():
    screen = DeployedScreen()
    screen.device.send_health()
    [sent] = screen.client.to("health")
    assert sent.qos == 0 and not sent.retain
    health = sent.payload
    assert set(health) == HEALTH_KEYS  # no top-level process_status, no timestamp
    assert health["expected_state"] == {
        "event_id": health["expected_state"]["event_id"],
        "event_type": health["expected_state"]["event_type"],
        "process": "chromium",
    }
    assert isinstance(health["expected_state"]["event_id"], int)
    assert health["expected_state"]["event_type"] in ("presentation", "web")
    assert health["actual_state"] == {
        "process_status": "running",
        "current_process": "chromium",
        "process_pid": health["actual_state"]["process_pid"],
        "restart_count": 0,
    }
    assert isinstance(health["actual_state"]["process_pid"], int)
    metrics = health["health_metrics"]
    assert set(metrics) == {"cpu_percent", "memory_percent", "temperature_c", "disk_free_mb"}
    assert all(isinstance(metrics[k], float) for k in ("cpu_percent", "memory_percent",
                                                        "temperature_c"))  # fmt: skip
    assert isinstance(metrics["disk_free_mb"], int)
    assert health["broker_connection"] == {"reconnect_count": 0, "last_disconnect_at": None}
    parsed = assert_valid(sent.topic, health, HEALTH)
    assert parsed.payload.reported_process_status() == "running"


def test_deployed_health_shows_a_crash_and_the_restart_that_ends_it():
    screen = DeployedScreen(crash_rate=1.0, crash_intervals=(1, 1))
    screen.device.health_tick()  # crashes
    screen.device.send_health()
    screen.device.health_tick()  # the watchdog restarts the player
    screen.device.send_health()
    crashed, back = (h["actual_state"] for h in screen.payloads("health"))
    assert crashed["process_status"] == "crashed" and crashed["process_pid"] is None
    assert back["process_status"] == "running" and back["restart_count"] == 1
    assert isinstance(back["process_pid"], int)
    health = screen.payloads("health")[0]
    assert assert_valid(topic("health"), health, HEALTH).payload.reported_process_status() == (
        "crashed"
    )


def test_deployed_health_reports_the_reconnects():
    screen = DeployedScreen()
    screen.at(NOW + timedelta(seconds=42))
    lose_connection(screen.device, screen.client)
    screen.connack()
    screen.device.send_health()
    [health] = screen.payloads("health")
    assert health["broker_connection"] == {
        "reconnect_count": 1,
        "last_disconnect_at": iso_z(NOW + timedelta(seconds=42)),
    }


def test_deployed_health_goes_every_5_s_while_crashes_keep_the_health_interval():
    screen = DeployedScreen(crash_rate=1.0)
    screen.device.health_tick()  # the process model ticks, but sends nothing itself
    assert screen.client.to("health") == []
    work = {p.name: p.interval for p in screen.device.extra_work()}
    assert work["health report"] == 5.0
    assert "tv power" in work


def test_a_fleet_sends_deployed_health_every_5_s_and_reference_health_per_interval():
    clients: list[FakeClient] = []

    def factory(client_uuid: str, password: str) -> FakeClient:
        clients.append(FakeClient())
        return clients[-1]

    monotonic = FakeMonotonic(START)
    options = DeviceOptions(seed=3, health_interval=60.0, crash_rate=0.0,
                            service_failed_rate=0.0,
                            profile_mix=(("reference", 1), ("infoscreen-2025", 1)))  # fmt: skip
    credentials = [(str(uuid.UUID(int=n + 1)), "pw") for n in range(2)]
    fleet = Fleet.create(PREFIX, credentials, options, clock=PinnedClock(),
                         client_factory=factory, monotonic=monotonic)  # fmt: skip
    assert [d.profile for d in fleet.devices] == [REFERENCE, INFOSCREEN_2025]
    for second in range(int(START), int(START) + 121):
        while fleet.scheduler.step(float(second) - 1e-6):
            pass
    reference, deployed = ([s for s in c.sent if s.topic.endswith("/health")] for c in clients)
    assert len(reference) == 2 and "process_status" in reference[0].payload
    assert len(deployed) == 24 and set(deployed[0].payload) == HEALTH_KEYS


# Acks and the frozen v1 actions -----------------------------------------------------------


def test_deployed_acks_always_carry_both_error_keys_on_both_topics():
    screen = DeployedScreen(speed=1000)
    screen.receive(command_body("reboot_host"))
    screen.advance(1)
    screen.connack()  # back from the reboot
    for suffix in ("commands/ack", "command/ack"):
        acks = screen.payloads(suffix)
        assert [a["status"] for a in acks] == ["accepted", "execution_started", "completed"]
        for ack in acks:
            assert ack == {"command_id": COMMAND, "status": ack["status"], "error_code": None,
                           "error_message": None}  # fmt: skip
            assert_valid(topic(suffix), ack, COMMAND_ACK)


def test_deployed_failed_acks_carry_non_empty_error_texts():
    screen = DeployedScreen(command_failure_rate=1.0)
    screen.receive(command_body("shutdown_host"))
    screen.advance(10)
    failed = screen.payloads("commands/ack")[-1]
    assert failed["status"] == "failed" and failed["error_code"] == "simulated_failure"
    assert failed["error_message"]
    assert deployed_ack_payload(COMMAND, "failed") == {
        "command_id": COMMAND, "status": "failed", "error_code": "unknown_error",
        "error_message": "unknown_error",
    }  # fmt: skip
    assert deployed_ack_payload(COMMAND, "completed", error_code="x")["error_code"] is None


def test_restart_app_is_not_in_the_frozen_v1_schema_and_fails():
    screen = DeployedScreen()
    screen.receive(command_body("restart_app"))
    for suffix in ("commands/ack", "command/ack"):
        [ack] = screen.payloads(suffix)
        assert ack["status"] == "failed" and ack["error_code"] == "unsupported_action"
        assert isinstance(ack["error_message"], str) and "restart_app" in ack["error_message"]
        assert_valid(topic(suffix), ack, COMMAND_ACK)
    assert screen.scheduler.next_due() is None  # no step planned
    assert screen.device.commands_handled == 0


def test_the_reference_profile_keeps_its_acks_and_actions():
    assert REFERENCE.ack(COMMAND, "accepted") == {"command_id": COMMAND, "status": "accepted"}
    assert REFERENCE.ack(COMMAND, "failed", error_code="e", error_message="m") == ack_payload(
        COMMAND, "failed", error_code="e", error_message="m"
    )
    assert "restart_app" in REFERENCE.actions and REFERENCE.subscriptions == ()
    screen = Screen()
    assert screen.device.tv is None
    assert [work.name for work in screen.device.extra_work()] == ["event change"]
    assert screen.client.subscriptions == [(topic("commands"), 1)]


# TV power ---------------------------------------------------------------------------------


def test_the_tv_reports_its_state_on_start_and_then_each_change():
    screen = DeployedScreen()  # 09:26 UTC: on
    [first] = screen.client.to("power/state")
    assert first.qos == 0 and not first.retain
    assert first.payload == {
        "schema_version": "1.0",
        "intent_id": None,
        "client_id": SCREEN,
        "reported_at": iso_z(NOW),
        "power": {"applied_state": "on", "source": "local_fallback", "result": "ok",
                  "detail": first.payload["power"]["detail"]},
    }  # fmt: skip
    assert first.payload["power"]["detail"]
    assert_valid(first.topic, first.payload, POWER_STATE)

    screen.at(datetime(2025, 3, 14, 21, 59, 59, tzinfo=UTC))
    screen.device.check_tv()
    assert len(screen.client.to("power/state")) == 1  # no change, no report
    screen.at(datetime(2025, 3, 14, 22, 0, 30, tzinfo=UTC))
    screen.device.check_tv()
    screen.device.check_tv()
    screen.at(datetime(2025, 3, 15, 6, 0, 10, tzinfo=UTC))
    screen.device.check_tv()
    states = [(p["power"]["applied_state"], p["reported_at"]) for p in screen.payloads(
        "power/state")]  # fmt: skip
    assert states == [
        ("on", iso_z(NOW)),
        ("off", "2025-03-14T22:00:30.000Z"),
        ("on", "2025-03-15T06:00:10.000Z"),
    ]
    for payload in screen.payloads("power/state"):
        assert payload["power"]["source"] == "local_fallback"
        assert payload["power"]["result"] == "ok"
        assert_valid(topic("power/state"), payload, POWER_STATE)


def test_the_tv_schedule_is_local_time():
    # 21:30 UTC in winter is 22:30 in Berlin: standby there, not yet in UTC.
    berlin = DeployedScreen(tv_timezone="Europe/Berlin")
    berlin.at(datetime(2025, 1, 10, 21, 30, tzinfo=UTC))
    berlin.device.check_tv()
    assert [p["power"]["applied_state"] for p in berlin.payloads("power/state")] == ["on", "off"]
    window = parse_standby("22:00-06:00")
    assert in_standby(time(23, 0), window) and in_standby(time(5, 59), window)
    assert not in_standby(time(6, 0), window) and not in_standby(time(21, 59), window)
    assert in_standby(time(13, 0), parse_standby("12:00-14:00"))
    for bad in ("22:00", "25:00-06:00", "06:00-06:00"):
        with pytest.raises(ValueError):
            parse_standby(bad)


def test_a_failed_tv_switch_is_reported_as_an_error():
    screen = DeployedScreen(tv_error_rate=1.0)
    [report] = screen.payloads("power/state")
    assert report["power"]["result"] == "error" and report["power"]["detail"]
    assert_valid(topic("power/state"), report, POWER_STATE)


def test_a_reboot_reports_the_tv_again_and_a_reconnect_only_a_change():
    screen = DeployedScreen(speed=1000)
    lose_connection(screen.device, screen.client)
    screen.connack()
    assert len(screen.client.to("power/state")) == 1  # the same boot: nothing new
    screen.receive(command_body("reboot_host"))
    screen.advance(1)
    screen.connack()
    assert [p["power"]["applied_state"] for p in screen.payloads("power/state")] == ["on", "on"]


def test_a_tv_change_during_an_outage_is_reported_after_it():
    screen = DeployedScreen()
    screen.client.connected = False
    screen.at(datetime(2025, 3, 14, 23, 0, tzinfo=UTC))
    screen.device.check_tv()
    assert len(screen.client.to("power/state")) == 1
    screen.connack()
    assert [p["power"]["applied_state"] for p in screen.payloads("power/state")] == ["on", "off"]


# The server's group_id --------------------------------------------------------------------


def test_it_reads_its_retained_group_id_and_keeps_it():
    screen = DeployedScreen()
    assert (topic("group_id"), 1) in screen.client.subscriptions
    assert screen.device.group_id is None
    screen.group_id(b"42")
    assert screen.device.group_id == 42
    screen.group_id(b"not a group")  # ignored: the last good one stays
    assert screen.device.group_id == 42
    screen.group_id(b"")  # no group
    assert screen.device.group_id is None


def test_a_reference_device_does_not_read_group_id():
    screen = Screen()
    message = mqtt.MQTTMessage(topic=topic("group_id").encode())
    message.payload = b"42"
    screen.client.on_message(screen.client, None, message)
    assert screen.device.group_id is None


# Mixing profiles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reference", "NAME=SHARE"),
        ("reference=six", "NAME=SHARE"),
        ("reference=0", "at least 1"),
        ("nokia=3", "no profile 'nokia'"),
        ("reference=1,reference=2", "named twice"),
    ],
)
def test_a_bad_profile_mix_is_refused_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_a_mix_deals_the_profiles_evenly_by_fleet_position():
    mix = parse_mix("reference=6,infoscreen-2025=4")
    assert mix == (("reference", 6), ("infoscreen-2025", 4))
    assert describe(profiles_for(mix, 0, 10)) == "6 reference, 4 infoscreen-2025"
    assert describe(profiles_for(mix, 0, 3)) == "2 reference, 1 infoscreen-2025"
    # A worker process of a split fleet gives each device the profile it has in one process.
    assert profiles_for(mix, 3, 4) == profiles_for(mix, 0, 7)[3:]
    for mix in [(("reference", 6), ("infoscreen-2025", 4)), (("reference", 1),),
                (("reference", 1), ("infoscreen-2025", 3))]:  # fmt: skip
        total = sum(share for _, share in mix)
        dealt = profiles_for(mix, 0, 50)
        for n in range(1, 51):  # every prefix within one device of its share
            for name, share in mix:
                given = sum(p.name == name for p in dealt[:n])
                assert abs(given - n * share / total) < 1


def test_the_quick_start_runs_six_reference_and_four_deployed_screens():
    assert parse_mix(SIM_PROFILE_MIX)  # what `infoscreen dev` hands to `simulate`
    assert sim_profiles(10) == "6 reference, 4 infoscreen-2025"


# The command line -------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infoscreen simulate")
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_simulate_offers_the_profiles_and_a_mix(capsys):
    assert parse().profile is None and parse().profile_mix is None  # reference, below
    assert parse("--profile", "infoscreen-2025").profile == "infoscreen-2025"
    assert parse("--profile-mix", "reference=6,infoscreen-2025=4").profile_mix == (
        ("reference", 6), ("infoscreen-2025", 4))  # fmt: skip
    for argv in (("--profile", "nokia"), ("--profile-mix", "nokia=1"),
                 ("--profile", "reference", "--profile-mix", "reference=1"),
                 ("--tv-standby", "late"), ("--tv-error-rate", "2")):  # fmt: skip
        with pytest.raises(SystemExit):
            parse(*argv)
    assert "not allowed with argument" in capsys.readouterr().err
    assert set(PROFILES) == {"reference", "infoscreen-2025"}


def run_cli(tmp_path, monkeypatch, *argv: str) -> tuple[int, list[DeviceOptions]]:
    path = tmp_path / "devices.json"
    credentials.write_credentials(path, [(SCREEN, "pw-123456")])
    seen: list[DeviceOptions] = []

    def run(settings, devices, options, stop, *, processes):
        seen.append(options)
        return True

    monkeypatch.setattr(cli, "run_fleet_processes", run)
    settings = Settings.model_validate({"BROKER_DIR": str(tmp_path / "broker")})
    code = cli.main(settings, parse("--clients", "1", "--credentials", str(path), *argv))
    return code, seen


def test_simulate_hands_the_profiles_and_the_tv_options_to_the_fleet(tmp_path, monkeypatch):
    code, [options] = run_cli(tmp_path, monkeypatch)
    assert code == 0 and options.profile_mix == (("reference", 1),)
    code, [options] = run_cli(
        tmp_path, monkeypatch, "--profile-mix", "reference=6,infoscreen-2025=4",
        "--tv-standby", "21:30-07:15", "--tv-timezone", "Europe/Berlin", "--tv-error-rate", "0.1",
    )  # fmt: skip
    assert code == 0
    assert options.profile_mix == (("reference", 6), ("infoscreen-2025", 4))
    assert options.tv_standby == (time(21, 30), time(7, 15))
    assert options.tv_timezone == "Europe/Berlin" and options.tv_error_rate == 0.1
    code, [options] = run_cli(tmp_path, monkeypatch, "--profile", "infoscreen-2025")
    assert options.profile_mix == DEPLOYED_MIX


def test_simulate_refuses_an_unknown_tv_timezone(tmp_path, monkeypatch, capsys):
    code, seen = run_cli(tmp_path, monkeypatch, "--tv-timezone", "Mars/Olympus_Mons")
    assert code == cli.EXIT_USAGE and seen == []
    assert "Mars/Olympus_Mons" in capsys.readouterr().err


# On a real broker -------------------------------------------------------------------------

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")


@pytest.fixture(scope="module")
def deployed_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ThrowawayBroker, Login]]:
    with broker_with_devices(tmp_path_factory.mktemp("deployed-broker"), 1) as (broker, [screen]):
        yield broker, screen


class Server:
    """The server's side of one screen: what it sends, with QoS and retain, and publishing."""

    def __init__(self, broker: ThrowawayBroker, screen: str):
        self.screen = screen
        self.messages: list[tuple[str, dict[str, Any], int, bool]] = []
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
        if message.payload and suffix not in ("commands", "group_id"):
            payload = json.loads(message.payload)
            self.messages.append((suffix, payload, message.qos, bool(message.retain)))

    def publish(self, suffix: str, payload: str, *, retain: bool = False) -> None:
        info = self.client.publish(f"{PREFIX}/{self.screen}/{suffix}", payload, qos=1,
                                   retain=retain)  # fmt: skip
        info.wait_for_publish(timeout=5)

    def sent(self, suffix: str) -> list[tuple[dict[str, Any], int, bool]]:
        return [(p, qos, retain) for s, p, qos, retain in list(self.messages) if s == suffix]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.broker
@needs_mosquitto
def test_a_deployed_screen_on_a_real_broker(deployed_broker, monkeypatch):
    broker, screen = deployed_broker
    monkeypatch.setattr(INFOSCREEN_2025, "health_interval", 0.2)  # seconds, not 5
    server = Server(broker, screen.username)
    server.publish("group_id", "42", retain=True)  # assigned before the screen connects
    settings = Settings.model_validate(
        {"MQTT_HOST": broker.host, "MQTT_PORT": broker.device_port,
         "BROKER_DIR": str(broker.directory)}
    )  # fmt: skip
    options = DeviceOptions(
        heartbeat_interval=60, health_interval=60, crash_rate=0, service_failed_rate=0,
        speed=200, seed=4, profile_mix=DEPLOYED_MIX, tv_timezone="UTC",
    )  # fmt: skip
    fleet = Fleet.create(PREFIX, [(screen.username, screen.password)], options)
    [device] = fleet.devices
    stop = threading.Event()
    fleet.start(settings)
    runner = threading.Thread(target=fleet.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_until(lambda: device.group_id == 42, timeout=10, message="the retained group_id")
        wait_until(lambda: server.sent("health"), timeout=10, message="health")
        wait_until(lambda: server.sent("power/state"), timeout=5, message="power/state")

        now = utc_now()
        for action in ("restart_app", "reboot_host"):
            body = command_body(action, command_id=str(uuid.uuid4()), client_uuid=screen.username,
                                issued_at=iso_z(now),
                                expires_at=iso_z(now + timedelta(minutes=5)))  # fmt: skip
            server.publish("commands", json.dumps(body))
        wait_until(lambda: len(server.sent("command/ack")) >= 4, timeout=15,
                   message="failed, then accepted .. completed")  # fmt: skip
        wait_until(lambda: len(server.sent("power/state")) >= 2, timeout=5,
                   message="the TV reported again after the reboot")  # fmt: skip
    finally:
        stop.set()
        runner.join(timeout=15)
        fleet.stop()
        server.close()
    assert not runner.is_alive()

    for health, qos, retain in server.sent("health"):
        assert set(health) == HEALTH_KEYS and qos == 0 and not retain
        assert_valid(f"{PREFIX}/{screen.username}/health", health, HEALTH)
    for report, qos, retain in server.sent("power/state"):
        assert qos == 0 and not retain
        assert report["client_id"] == screen.username
        assert report["power"]["source"] == "local_fallback"
        assert_valid(f"{PREFIX}/{screen.username}/power/state", report, POWER_STATE)
    for suffix in ("commands/ack", "command/ack"):
        acks = [payload for payload, _, _ in server.sent(suffix)]
        assert [(a["status"], a["error_code"]) for a in acks] == [
            ("failed", "unsupported_action"),
            ("accepted", None),
            ("execution_started", None),
            ("completed", None),
        ]
        for ack in acks:
            assert set(ack) == {"command_id", "status", "error_code", "error_message"}
            assert_valid(f"{PREFIX}/{screen.username}/{suffix}", ack, COMMAND_ACK)


def test_a_start_delay_holds_the_devices_back(tmp_path, monkeypatch):
    import time as clock

    started = clock.monotonic()
    code, [_] = run_cli(tmp_path, monkeypatch, "--start-delay", "0.3")
    assert code == 0 and clock.monotonic() - started >= 0.3

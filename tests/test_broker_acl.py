"""The broker's access rules, as generated: checked against a real Mosquitto over MQTT 5."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest

from tests.brokers import Login
from tests.helpers import wait_until

pytestmark = pytest.mark.broker

NOT_AUTHORIZED = 0x87


def ok(code: int) -> bool:
    """MQTT 5 reason codes below 0x80 are successes (0x10: no subscriber yet)."""
    return code < 0x80


class Session:
    """One MQTT 5 connection that records PUBACK reason codes and received messages."""

    def __init__(self, broker, login: Login | None):
        self.client = broker.client(login)
        self.connack: list = []
        self.pubacks: dict[int, int] = {}
        self.received: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.append(rc)
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda c, u, m: self.received.append(m)
        self.client.connect(broker.host, broker.port_for(login))
        self.client.loop_start()
        wait_until(lambda: self.connack, timeout=5, message="CONNACK")

    def _on_publish(self, _c, _u, mid, reason_code, _p) -> None:
        with self.lock:
            self.pubacks[mid] = reason_code.value

    @property
    def accepted(self) -> bool:
        return not self.connack[0].is_failure

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        info = self.client.publish(topic, payload, qos=1)
        return wait_until(lambda: self.pubacks.get(info.mid, None) is not None
                          and [self.pubacks[info.mid]], timeout=5, message="PUBACK")[0]

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def connect(broker):
    sessions: list[Session] = []

    def make(login: Login | None) -> Session:
        s = Session(broker, login)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()


def test_anonymous_connections_are_refused(connect):
    assert not connect(None).accepted


def test_a_wrong_password_is_refused(connect, broker):
    assert not connect(Login(broker.device_a.username, "not-the-password")).accepted


@pytest.mark.parametrize("suffix", ["heartbeat", "power/state", "dashboard", "screenshot"])
def test_a_device_publishes_its_own_telemetry(connect, broker, suffix):
    device = connect(broker.device_a)
    assert ok(device.publish(f"infoscreen/{broker.device_a.username}/{suffix}"))


@pytest.mark.parametrize("suffix", ["heartbeat", "health", "service_failed", "commands/ack",
                                    "discovery", "status", "logs/error", "power/state",
                                    "dashboard", "screenshot"])
def test_a_device_cannot_publish_to_another_devices_topics(connect, broker, suffix):
    device = connect(broker.device_a)
    assert device.publish(f"infoscreen/{broker.device_b.username}/{suffix}") == NOT_AUTHORIZED


@pytest.mark.parametrize("topic", ["infoscreen/monitoring/events", "infoscreen/{me}/commands",
                                   "infoscreen/monitoring/clients/{me}",
                                   "infoscreen/{other}/commands", "elsewhere",
                                   "infoscreen/{me}/group_id", "infoscreen/{other}/group_id",
                                   "infoscreen/groups/1/power/intent"])
def test_a_device_cannot_publish_commands_or_monitoring(connect, broker, topic):
    device = connect(broker.device_a)
    topic = topic.format(me=broker.device_a.username, other=broker.device_b.username)
    assert device.publish(topic) == NOT_AUTHORIZED


@pytest.mark.parametrize("topic", ["infoscreen/monitoring/events", "infoscreen/{dev}/heartbeat",
                                   "infoscreen/{dev}/commands", "anything",
                                   "infoscreen/{dev}/group_id", "infoscreen/groups/1/power/intent"])
def test_a_monitor_cannot_publish_at_all(connect, broker, topic):
    monitor = connect(broker.monitor)
    assert monitor.publish(topic.format(dev=broker.device_a.username)) == NOT_AUTHORIZED


def test_a_device_receives_its_own_commands_but_not_another_devices(connect, broker):
    a, b = broker.device_a.username, broker.device_b.username
    device = connect(broker.device_a)
    device.subscribe("infoscreen/+/commands")
    server = connect(broker.server)
    assert ok(server.publish(f"infoscreen/{b}/commands", b'{"for": "b"}'))
    assert ok(server.publish(f"infoscreen/{a}/commands", b'{"for": "a"}'))
    wait_until(lambda: device.received, timeout=5, message="own command")
    # Delivery is in order on one connection: once A's arrived, B's would have come first.
    assert [m.topic for m in device.received] == [f"infoscreen/{a}/commands"]


def test_a_device_reads_its_own_group_and_the_group_power_intents(connect, broker):
    a, b = broker.device_a.username, broker.device_b.username
    device = connect(broker.device_a)
    device.subscribe("infoscreen/+/group_id")
    device.subscribe("infoscreen/groups/+/power/intent")
    server = connect(broker.server)
    assert ok(server.publish(f"infoscreen/{b}/group_id", b"7"))
    assert ok(server.publish(f"infoscreen/{a}/group_id", b"3"))
    assert ok(server.publish("infoscreen/groups/3/power/intent", b'{"desired_state": "on"}'))
    live = lambda: [m for m in device.received if not m.retain]  # noqa: E731
    wait_until(lambda: len(live()) >= 2, timeout=5, message="own group and the intent")
    assert [(m.topic, m.payload) for m in live()] == [
        (f"infoscreen/{a}/group_id", b"3"),
        ("infoscreen/groups/3/power/intent", b'{"desired_state": "on"}'),
    ]


def test_a_monitor_reads_telemetry_and_monitoring(connect, broker):
    monitor = connect(broker.monitor)
    monitor.subscribe("infoscreen/#")
    connect(broker.device_a).publish(f"infoscreen/{broker.device_a.username}/heartbeat")
    connect(broker.server).publish("infoscreen/monitoring/events", b'{"type": "x"}')
    # Retained messages other tests left at the shared broker are not what this is about.
    live = lambda: [m for m in monitor.received if not m.retain]  # noqa: E731
    wait_until(lambda: len(live()) >= 2, timeout=5, message="two messages")
    assert {m.topic.split("/")[-1] for m in live()} == {"heartbeat", "events"}


def test_device_add_provisions_a_login_the_running_broker_accepts(connect, broker):
    new = str(uuid.uuid4())
    done = subprocess.run(
        [sys.executable, "-m", "infoscreen", "device", "add", new],
        env={"BROKER_DIR": str(broker.directory), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=True,
    )
    password = next(line.split(": ", 1)[1] for line in done.stdout.splitlines()
                    if line.startswith("password"))
    assert "reloaded" in done.stdout
    login = Login(new, password)
    wait_until(lambda: connect(login).accepted, timeout=5, message="new login accepted")
    assert ok(connect(login).publish(f"infoscreen/{new}/heartbeat"))
    assert connect(login).publish(f"infoscreen/{broker.device_a.username}/heartbeat") == (
        NOT_AUTHORIZED)


def test_monitor_add_provisions_a_read_only_login(connect, broker):
    done = subprocess.run(
        [sys.executable, "-m", "infoscreen", "monitor", "add", "noc-dashboard",
         "--password-stdin"],
        input="a-long-enough-password\n",
        env={"BROKER_DIR": str(broker.directory), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert "a-long-enough-password" not in done.stdout
    login = Login("noc-dashboard", "a-long-enough-password")
    wait_until(lambda: connect(login).accepted, timeout=5, message="monitor login accepted")
    assert connect(login).publish("infoscreen/monitoring/events") == NOT_AUTHORIZED

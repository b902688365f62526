"""Who may be whom at the broker: a device cannot take another client's id, cannot join the
listeners' shared subscription group, and cannot send packets past the broker's limit.

Each rule is checked on the plain test broker and on the TLS one, with a password and with a
device certificate (mutual TLS), because each listener carries its own settings.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from core.models import Client
from mosquitto.config import MAX_PACKET_BYTES
from tests import brokers
from tests.brokers import Login
from tests.helpers import wait_until

pytestmark = pytest.mark.broker

NOT_AUTHORIZED = 0x87
GROUP_FILTER = "$share/listeners/infoscreen/+/heartbeat"


class Connection:
    """One MQTT 5 connection with a chosen client id that records what happens to it."""

    def __init__(self, client: mqtt.Client, host: str, port: int):
        self.client = client
        self.lock = threading.Lock()
        self.connacks: list = []
        self.disconnects: list = []
        self.received: list[mqtt.MQTTMessage] = []
        self.suback: list[int] = []
        client.on_connect = lambda c, u, f, rc, p: self.connacks.append(rc)
        client.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(rc)
        client.on_message = self._keep
        client.on_subscribe = lambda c, u, mid, codes, p: self.suback.extend(
            code.value for code in codes)
        client.connect(host, port, keepalive=30)
        client.loop_start()
        wait_until(lambda: self.connacks, timeout=5, message="CONNACK")

    def _keep(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append(message)

    @property
    def accepted(self) -> bool:
        return not self.connacks[0].is_failure

    def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, qos=1)
        return wait_until(lambda: self.suback and [self.suback[-1]], timeout=5,
                          message="SUBACK")[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Way:
    """How a device reaches one broker: with its password, or with its certificate."""

    broker: brokers.TestBroker
    certificate: bool = False

    def connect(self, login: Login, client_id: str) -> Connection:
        broker = self.broker
        if self.certificate:
            assert isinstance(broker, brokers.TlsTestBroker)
            context = broker.client_context(certificate=login.username)
            return Connection(broker.client(None, client_id, context=context), broker.host,
                              broker.mtls_port)
        return Connection(broker.client(login, client_id), broker.host, broker.port_for(login))


@pytest.fixture(params=["plain", "tls", "mutual-tls"])
def way(request, broker, tls_broker) -> Way:
    if request.param == "plain":
        return Way(broker)
    return Way(tls_broker, certificate=request.param == "mutual-tls")


@pytest.fixture
def connections() -> Iterator[list[Connection]]:
    opened: list[Connection] = []
    yield opened
    for connection in opened:
        connection.close()


def takeover_attempts(way: Way, client_id: str, connections: list[Connection]) -> None:
    """Device A logs in five times in a row with `client_id`, as the attacker did."""
    for _ in range(5):
        attempt = way.connect(way.broker.device_a, client_id)
        connections.append(attempt)
        assert attempt.accepted  # it gets in, but as itself
        attempt.close()


def test_a_device_using_the_listeners_client_id_does_not_disconnect_it(way, connections):
    broker = way.broker
    listener_id = f"infoscreen-listener-{uuid.uuid4().hex[:6]}"
    listener = Way(broker).connect(broker.server, listener_id)
    connections.append(listener)
    takeover_attempts(way, listener_id, connections)
    assert listener.disconnects == [] and listener.client.is_connected()
    assert f"Client {listener_id} already connected" not in broker.log_text()


def test_a_device_using_another_devices_client_id_does_not_disconnect_it(way, connections):
    broker = way.broker
    victim = Way(broker).connect(broker.device_b, broker.device_b.username)
    connections.append(victim)
    takeover_attempts(way, broker.device_b.username, connections)
    assert victim.disconnects == [] and victim.client.is_connected()


def test_a_monitor_cannot_take_the_listeners_client_id_either(broker, connections):
    listener_id = f"infoscreen-listener-{uuid.uuid4().hex[:6]}"
    listener = Way(broker).connect(broker.server, listener_id)
    connections.append(listener)
    connections.append(Way(broker).connect(broker.monitor, listener_id))
    assert listener.disconnects == [] and listener.client.is_connected()


def test_a_device_cannot_log_in_on_the_services_listener(broker, connections):
    client = broker.client(broker.device_a, broker.device_a.username)
    attempt = Connection(client, broker.host, broker.port)
    connections.append(attempt)
    assert not attempt.accepted


def test_a_device_joining_the_listeners_shared_group_takes_no_message(way, connections):
    broker = way.broker
    members = [Way(broker).connect(broker.server, f"member-{n}-{uuid.uuid4().hex[:4]}")
               for n in range(2)]
    connections.extend(members)
    for member in members:
        assert member.subscribe(GROUP_FILTER) == 1
    intruder = way.connect(broker.device_a, broker.device_a.username)
    connections.append(intruder)
    assert intruder.subscribe(GROUP_FILTER) == NOT_AUTHORIZED

    sender = Way(broker).connect(broker.device_b, broker.device_b.username)
    connections.append(sender)
    topic = f"infoscreen/{broker.device_b.username}/heartbeat"
    for n in range(20):
        sender.client.publish(topic, json.dumps({"n": n}), qos=1).wait_for_publish(timeout=5)
    wait_until(lambda: sum(len(m.received) for m in members) == 20, timeout=5,
               message="the group members to get every heartbeat")
    assert intruder.received == []
    assert all(member.received for member in members)  # both still take their turns


def test_a_packet_above_the_brokers_limit_disconnects_the_device_and_the_listener_stays(
        db, broker, listener, connections):
    # An MQTT 3.1.1 client is not told the limit (MQTT 5 clients learn it from the CONNACK),
    # so it sends the packet and the broker must refuse it.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="oversize",
                         protocol=mqtt.MQTTv311)
    client.username_pw_set(broker.device_a.username, broker.device_a.password)
    flood = Connection(client, broker.host, broker.device_port)
    connections.append(flood)
    flood.client.publish(f"infoscreen/{broker.device_a.username}/logs/info",
                         b"x" * (MAX_PACKET_BYTES + 1), qos=1)
    wait_until(lambda: flood.disconnects, timeout=10, message="the broker to drop the device")

    sender = Way(broker).connect(broker.device_b, broker.device_b.username)
    connections.append(sender)
    sender.client.publish(f"infoscreen/{broker.device_b.username}/heartbeat", b"{}",
                          qos=1).wait_for_publish(timeout=5)

    def stored() -> bool:
        with db.sessions() as session:
            return session.scalar(select(Client.uuid).where(
                Client.uuid == broker.device_b.username)) is not None

    wait_until(stored, timeout=5, message="the listener to store the next heartbeat")
    assert listener.listener.client.is_connected()
    assert listener.batcher.rejected == {}

"""The publisher's PUBACK bookkeeping, without a broker."""

from __future__ import annotations

import queue
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import paho.mqtt.client as mqtt

from mqtt_client.publisher import Publisher

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class FakeClient:
    def __init__(self):
        self.mid = 0

    def publish(self, topic, payload, qos, retain, properties):
        self.mid += 1
        return SimpleNamespace(rc=mqtt.MQTT_ERR_SUCCESS, mid=self.mid)


def started(clock):
    publisher = Publisher(FakeClient(), clock=clock)  # type: ignore[arg-type]
    publisher._worker.start()
    publisher._connected.set()
    return publisher


def test_the_callback_gets_the_time_the_puback_arrived_not_when_it_runs():
    now = [T0]
    publisher = started(lambda: now[0])
    got: queue.SimpleQueue = queue.SimpleQueue()
    assert publisher.publish("t", b"x", on_puback=lambda ok, at: got.put((ok, at)))
    publisher._on_publish(None, None, 1, SimpleNamespace(is_failure=False), None)
    now[0] = T0 + timedelta(seconds=5)  # the worker thread may run the callback later
    assert got.get(timeout=5) == (True, T0)


def test_a_puback_that_beats_the_bookkeeping_still_reaches_its_callback():
    publisher = started(lambda: T0)
    publisher._on_publish(None, None, 1, SimpleNamespace(is_failure=False), None)  # mid 1 early
    got: queue.SimpleQueue = queue.SimpleQueue()
    publisher.publish("t", b"x", on_puback=lambda ok, at: got.put((ok, at)))
    assert got.get(timeout=5) == (True, T0)


def test_a_refused_message_and_a_lost_connection_report_not_acknowledged():
    publisher = started(lambda: T0)
    got: queue.SimpleQueue = queue.SimpleQueue()
    publisher.publish("a", b"x", on_puback=lambda ok, at: got.put(("a", ok)))
    publisher.publish("b", b"x", on_puback=lambda ok, at: got.put(("b", ok)))
    publisher._on_publish(None, None, 1, SimpleNamespace(is_failure=True), None)  # 0x87
    publisher._on_disconnect(None, None, None, SimpleNamespace(is_failure=True), None)
    assert {got.get(timeout=5), got.get(timeout=5)} == {("a", False), ("b", False)}
    assert not publisher.connected

"""The listener end to end: real Mosquitto (our generated config), real databases."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import pytest
from sqlalchemy import func, select

from core import contract
from core.models import Client, ClientLog, Event, IngestRejection
from tests.conftest import RunningListener, make_settings
from tests.helpers import wait_until

pytestmark = pytest.mark.broker


def stored(db, uuid_: str) -> Client | None:
    with db.sessions() as session:
        return session.get(Client, uuid_)


def rejected(db) -> dict[str, int]:
    with db.sessions() as session:
        return {r.reason: r.count for r in session.scalars(select(IngestRejection))}


def count(db, model) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_every_kind_of_message_from_mosquitto_pub_lands_within_a_second(db, broker, listener):
    device = broker.device_a
    base = f"infoscreen/{device.username}"
    messages = [
        ("discovery", {"uuid": device.username, "hostname": "screen-hall", "ip": "10.0.0.7",
                       "software_version": "2025.3.1"}, False),
        ("heartbeat", {"timestamp": "2026-11-24T12:00:00Z"}, False),
        ("health", {"timestamp": "2026-11-24T12:00:00Z", "process_status": "running",
                    "broker_connection": {"reconnect_count": 4, "last_disconnect_at": None}},
         False),
        ("service_failed", {"unit": "player.service", "failed_at": "2026-11-24T11:59:00Z"}, True),
        ("logs/warn", {"timestamp": "2026-11-24T12:00:00Z", "message": "low disk",
                       "context": {"free_mb": 80}}, False),
    ]
    tool = shutil.which("mosquitto_pub")
    assert tool, "mosquitto_pub is not installed (package mosquitto-clients)"
    for suffix, payload, retain in messages:
        started = time.monotonic()
        subprocess.run(
            [tool, "-h", broker.host, "-p", str(broker.device_port), "-u", device.username,
             "-P", device.password, "-q", "1", "-t", f"{base}/{suffix}",
             "-m", json.dumps(payload)] + (["-r"] if retain else []),
            check=True, timeout=10,
        )
        check = {
            "discovery": lambda: (c := stored(db, device.username)) and c.hostname,
            "heartbeat": lambda: (c := stored(db, device.username)) and c.last_heartbeat_at,
            "health": lambda: (c := stored(db, device.username)) and c.mqtt_reconnect_count == 4,
            "service_failed": lambda: (c := stored(db, device.username)) and c.service_failed_open,
            "logs/warn": lambda: count(db, ClientLog) == 1,
        }[suffix]
        wait_until(check, timeout=5, message=f"{suffix} stored")
        assert time.monotonic() - started < 1.0 + 0.5, f"{suffix} took too long"  # incl. process
    # clear the retained alert so that later tests start clean
    subprocess.run([tool, "-h", broker.host, "-p", str(broker.device_port), "-u", device.username,
                    "-P", device.password, "-q", "1", "-r", "-n", "-t", f"{base}/service_failed"],
                   check=True, timeout=10)
    wait_until(lambda: not stored(db, device.username).service_failed_at, timeout=5,
               message="alert cleared by the device")


BAD = {
    "payload_too_large": ("heartbeat", b"{" + b" " * 2000 + b"}"),
    "unknown_topic": ("logs/debug", b'{"timestamp": "2026-11-24T12:00:00Z", "message": "x"}'),
    "invalid_json": ("heartbeat", b"{not json"),
    "not_an_object": ("heartbeat", b"[]"),
    "missing_field": ("service_failed", b'{"failed_at": "2026-11-24T12:00:00Z"}'),
    "wrong_type": ("health", b'{"timestamp": "2026-11-24T12:00:00Z", "process_status": 1}'),
    "invalid_value": ("health", b'{"timestamp": "2026-11-24T12:00:00Z", "process_status": "x"}'),
    "uuid_mismatch": ("heartbeat", b'{"uuid": "9b2c1f3e-0d4a-4c5b-8e7f-1a2b3c4d5e6f"}'),
}


def bad_topic(reason: str, client_id: str) -> tuple[str, bytes]:
    suffix, payload = BAD[reason]
    return f"infoscreen/{client_id}/{suffix}", payload


@pytest.mark.parametrize("reason", sorted(BAD) + ["invalid_client_id"])
def test_it_rejects_bad_messages_from_the_broker_counting_them_and_writing_nothing(
    db, broker, listener, publish_as, reason
):
    publisher = publish_as(broker.simulator)
    client_id = str(uuid.uuid4())
    if reason == "invalid_client_id":
        topic, payload = "infoscreen/not-a-uuid/heartbeat", b"{}"
    else:
        topic, payload = bad_topic(reason, client_id)
    publisher.publish(topic, payload)
    wait_until(lambda: rejected(db).get(reason) == 1, timeout=5, message=f"{reason} counted")
    assert stored(db, client_id) is None
    assert count(db, Client) == count(db, Event) == count(db, ClientLog) == 0
    assert listener.thread.is_alive()


def test_it_survives_ten_thousand_malformed_messages_and_counts_every_one(
    db, broker, listener, publish_as
):
    publisher = publish_as(broker.simulator)
    reasons = sorted(BAD)
    sent: dict[str, int] = dict.fromkeys(reasons, 0)
    total = 10_000
    infos = []
    for i in range(total):
        reason = reasons[i % len(reasons)]
        topic, payload = bad_topic(reason, str(uuid.UUID(int=i + 1)))
        infos.append(publisher.client.publish(topic, payload, qos=1))
        sent[reason] += 1
    for info in infos:
        info.wait_for_publish(timeout=30)
    wait_until(lambda: sum(rejected(db).values()) == total, timeout=60,
               message="every malformed message counted")
    assert rejected(db) == sent
    assert count(db, Client) == 0
    assert listener.thread.is_alive()
    # ...and it still stores good messages.
    good = publish_as(broker.device_a)
    good.publish(f"infoscreen/{broker.device_a.username}/heartbeat", {})
    wait_until(lambda: stored(db, broker.device_a.username), timeout=5, message="heartbeat stored")


def test_two_listeners_share_the_load_in_a_shared_group(db, broker, publish_as):
    settings = make_settings(broker, db.url, LISTENER_SHARED_GROUP="ingest")
    first = RunningListener(settings, f"shared-a-{uuid.uuid4().hex[:6]}")
    second = RunningListener(settings, f"shared-b-{uuid.uuid4().hex[:6]}")
    try:
        publisher = publish_as(broker.simulator)
        ids = [str(uuid.uuid4()) for _ in range(200)]
        for client_id in ids:
            publisher.publish(f"infoscreen/{client_id}/heartbeat", {}, qos=1)
        wait_until(lambda: count(db, Client) == 200, timeout=10, message="200 clients stored")

        def stored() -> tuple[int, int]:
            return sum(first.batcher.stored.values()), sum(second.batcher.stored.values())

        # A batcher counts what it stored just after its commit: wait for the counts too.
        wait_until(lambda: sum(stored()) >= 200, timeout=5, message="the counts of both")
        a, b = stored()
        assert a + b == 200  # each message once
        assert a > 0 and b > 0  # and both took part
        # A stopped member leaves the group at once: the other one takes every message.
        first.stop()
        more = [str(uuid.uuid4()) for _ in range(50)]
        for client_id in more:
            publisher.publish(f"infoscreen/{client_id}/heartbeat", {}, qos=1)
        wait_until(lambda: count(db, Client) == 250, timeout=10, message="50 more stored")
    finally:
        first.stop()
        second.stop()


def test_messages_sent_while_the_listener_is_stopped_arrive_when_it_is_back(
    db, broker, publish_as
):
    settings = make_settings(broker, db.url)
    client_id = f"restart-{uuid.uuid4().hex[:6]}"
    running = RunningListener(settings, client_id)
    running.stop()
    publisher = publish_as(broker.simulator)
    ids = [str(uuid.uuid4()) for _ in range(50)]
    for client_id_ in ids:
        publisher.publish(f"infoscreen/{client_id_}/heartbeat", {}, qos=1)
    running.start()  # same client id: the broker kept our session and its queue
    try:
        wait_until(lambda: count(db, Client) == 50, timeout=10, message="queued messages stored")
    finally:
        running.stop()


def test_it_reconnects_and_resubscribes_after_a_broker_restart(db, broker, listener, publish_as):
    first = str(uuid.uuid4())
    publish_as(broker.simulator).publish(f"infoscreen/{first}/heartbeat", {})
    wait_until(lambda: stored(db, first), timeout=5, message="first heartbeat")
    broker.restart()
    wait_until(listener.listener.subscribed.is_set, timeout=40, message="listener resubscribed")
    second = str(uuid.uuid4())
    publish_as(broker.simulator).publish(f"infoscreen/{second}/heartbeat", {})
    wait_until(lambda: stored(db, second), timeout=10, message="heartbeat after the restart")
    assert count(db, Client) == 2


def test_presence_and_health_kinds_are_counted_in_metrics(db, broker, listener, publish_as):
    device = broker.device_b
    publisher = publish_as(device)
    publisher.publish(f"infoscreen/{device.username}/status", {"status": "online", "session": 1},
                      retain=True)
    wait_until(lambda: (c := stored(db, device.username)) and c.presence == "online", timeout=5,
               message="presence stored")
    assert listener.batcher.stored[contract.STATUS] >= 1

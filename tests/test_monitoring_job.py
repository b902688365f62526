"""Monitor topics (scheduler.monitoring) through a real Mosquitto: the events outbox and the
retained per-client states, as a monitor login sees them."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from core.events import new_event
from core.models import Client, Event
from mqtt_client.publisher import Publisher
from scheduler.monitoring import SIGNATURE, DeliverEvents, PublishClientStates
from tests.conftest import make_settings
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.broker

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PREFIX = "infoscreen"
EVENTS = f"{PREFIX}/monitoring/events"
HALL = "00000000-0000-0000-0000-000000000001"


def seconds(n: float) -> datetime:
    return NOW + timedelta(seconds=n)


def state_topic(client_uuid: str) -> str:
    return f"{PREFIX}/monitoring/clients/{client_uuid}"


class Monitor:
    """A read-only monitor login subscribed to the monitoring topics."""

    def __init__(self, broker):
        self.client = broker.client(broker.monitor)
        self.lock = threading.Lock()
        self.received: list[tuple[str, Any, bool]] = []  # topic, payload, retain flag
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/monitoring/#",
                                                                     qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port_for(broker.monitor))
        self.client.loop_start()
        assert subscribed.wait(5), "monitor subscribed"

    def _on_message(self, _client, _userdata, message) -> None:
        payload = json.loads(message.payload) if message.payload else None
        with self.lock:
            self.received.append((message.topic, payload, bool(message.retain)))

    def on(self, topic: str) -> list[tuple[Any, bool]]:
        with self.lock:
            return [(p, r) for t, p, r in self.received if t == topic]

    def payloads(self, topic: str) -> list[Any]:
        return [p for p, _ in self.on(topic)]

    def events(self, ids: set[int]) -> list[dict]:
        return [p for p in self.payloads(EVENTS) if p["id"] in ids]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def monitors(broker):
    opened: list[Monitor] = []

    def make() -> Monitor:
        opened.append(Monitor(broker))
        return opened[-1]

    yield make
    for monitor in opened:
        monitor.close()


@pytest.fixture
def publisher(settings):
    started = Publisher.start(settings, f"scheduler-test-{uuid.uuid4().hex[:8]}")
    assert started.wait_connected(10), "publisher connected"
    yield started
    started.stop()


@pytest.fixture
def no_broker(broker, db):
    """A publisher whose broker is away: nothing listens on its port."""
    away = Publisher.start(make_settings(broker, db.url, MQTT_PORT=free_port()),
                           f"scheduler-test-{uuid.uuid4().hex[:8]}")
    yield away
    away.stop()


@pytest.fixture
def clients(db, publish_as, broker):
    """Clients of this test only (retained states outlive a test at the broker); their
    retained states are cleared afterwards."""
    made: list[str] = []

    def make(**values) -> str:
        client_uuid = str(uuid.uuid4())
        values = {"liveness": "alive", "process_status": "running", "hostname": "hall-1",
                  **values}
        with db.sessions() as session, session.begin():
            session.add(Client(uuid=client_uuid, first_seen_at=NOW, last_seen_at=NOW,
                               last_heartbeat_at=NOW, **values))
        made.append(client_uuid)
        return client_uuid

    yield make
    server = publish_as(broker.server)
    for client_uuid in made:
        server.publish(state_topic(client_uuid), b"", retain=True)


def step(db, job, at: datetime = NOW) -> bool:
    with db.sessions() as session, session.begin():
        return job(session, at)


def add_events(db, *events: Event) -> set[int]:
    with db.sessions() as session, session.begin():
        session.add_all(events)
        session.flush()
        return {e.id for e in events}


def delivered(db, ids: set[int]) -> dict[int, datetime | None]:
    with db.sessions() as session:
        return dict(session.execute(
            select(Event.id, Event.delivered_at).where(Event.id.in_(ids))).all())


def signature(db, client_uuid: str) -> str | None:
    with db.sessions() as session:
        return session.get(Client, client_uuid).monitor_signature


def acknowledged(db, client_uuid: str) -> bool:
    """The broker acknowledged the client's current state (the step stored its signature)."""
    with db.sessions() as session:
        current, stored = session.execute(
            select(SIGNATURE, Client.monitor_signature).where(Client.uuid == client_uuid)
        ).one()
    return current == stored


def change(db, client_uuid: str, **values) -> None:
    with db.sessions() as session, session.begin():
        session.execute(update(Client).where(Client.uuid == client_uuid).values(**values))


# Events ------------------------------------------------------------------------------------


def deliver(db, job: DeliverEvents, monitor: Monitor, ids: set[int], at: datetime) -> list[dict]:
    """Step until the events are marked delivered, then send a marker event through the
    same job: delivery is in order on one connection, so once the marker is in, anything
    published more than once would be in too. What the monitor saw of `ids`, in order."""
    wait_until(lambda: step(db, job, at) or all(delivered(db, ids).values()), timeout=5,
               message="delivered_at written after the PUBACKs")
    marker = add_events(db, new_event("marker", "info", at))
    step(db, job, at)
    wait_until(lambda: monitor.events(marker), timeout=5, message="the marker event")
    return monitor.events(ids)


def test_each_event_goes_out_as_one_message_and_is_marked_delivered_after_the_puback(
        db, publisher, monitors, clients):
    monitor = monitors()
    hall = clients()
    ids = add_events(
        db,
        new_event("client_down", "error", NOW, hall, lastSeenAt=seconds(-300).isoformat()),
        new_event("auto_recovery_braked", "warning", seconds(1), down=5, total=10),
    )
    job = DeliverEvents(publisher, PREFIX)
    assert not step(db, job, seconds(2))
    assert delivered(db, ids) == dict.fromkeys(ids)  # published, not yet acknowledged
    first, second = deliver(db, job, monitor, ids, seconds(3))
    assert first == {
        "id": min(ids), "type": "client_down", "severity": "error", "clientUuid": hall,
        "occurredAt": "2026-11-24T12:00:00+00:00",
        "details": {"lastSeenAt": "2026-11-24T11:55:00+00:00"},
    }
    assert second == {
        "id": max(ids), "type": "auto_recovery_braked", "severity": "warning",
        "clientUuid": None, "occurredAt": "2026-11-24T12:00:01+00:00",
        "details": {"down": 5, "total": 10},
    }
    assert set(delivered(db, ids).values()) == {seconds(3)}  # the step that wrote the PUBACK


def test_many_events_each_go_out_once(db, publisher, monitors):
    monitor = monitors()
    ids = add_events(db, *(new_event("client_down", "error", seconds(n)) for n in range(50)))
    seen = deliver(db, DeliverEvents(publisher, PREFIX), monitor, ids, seconds(60))
    assert [p["id"] for p in seen] == sorted(ids)


def test_a_delivered_event_is_not_sent_again(db, publisher, monitors):
    monitor = monitors()
    job = DeliverEvents(publisher, PREFIX)
    first = add_events(db, new_event("client_down", "error", NOW))
    deliver(db, job, monitor, first, NOW)
    for n in range(3):
        step(db, job, seconds(n))
    second = add_events(db, new_event("client_recovered", "info", seconds(60)))
    seen = deliver(db, job, monitor, second, seconds(60))
    assert [p["type"] for p in seen] == ["client_recovered"]
    assert len(monitor.events(first)) == 1


def test_events_wait_in_the_outbox_while_the_broker_is_away(db, publisher, no_broker,
                                                            monitors):
    monitor = monitors()
    ids = add_events(db, new_event("client_down", "error", NOW),
                     new_event("crash_detected", "error", NOW))
    away = DeliverEvents(no_broker, PREFIX)
    for n in range(3):
        assert not step(db, away, seconds(n))
    assert delivered(db, ids) == dict.fromkeys(ids)
    back = DeliverEvents(publisher, PREFIX)  # the scheduler, reconnected
    seen = deliver(db, back, monitor, ids, seconds(10))
    assert [p["id"] for p in seen] == sorted(ids)


class ScriptedPublisher:
    """Stands in for the Publisher where timing matters: a PUBACK arrives while a step runs
    (when the step asks whether the publisher is connected), or the connection drops between
    that question and the publish."""

    def __init__(self, refuse_first: int = 0):
        self.published: list[tuple[str, dict]] = []
        self.pending: list = []
        self.refuse = refuse_first

    @property
    def connected(self) -> bool:
        for on_puback in self.pending:
            on_puback(True)
        self.pending.clear()
        return True

    def publish(self, topic, payload, *, retain=False, expiry_seconds=None, on_puback=None):
        if self.refuse:
            self.refuse -= 1
            return False
        self.published.append((topic, json.loads(payload)))
        self.pending.append(on_puback)
        return True


def test_a_puback_that_arrives_during_a_step_does_not_send_the_event_twice(db):
    ids = add_events(db, new_event("client_down", "error", NOW))
    publisher = ScriptedPublisher()
    job = DeliverEvents(publisher, PREFIX)
    for n in range(3):
        step(db, job, seconds(n))
    assert [p["id"] for _, p in publisher.published] == list(ids)
    assert set(delivered(db, ids).values()) == {seconds(2)}


def test_an_event_the_publisher_refused_is_tried_again_at_the_next_step(db):
    ids = add_events(db, new_event("client_down", "error", NOW))
    publisher = ScriptedPublisher(refuse_first=1)
    job = DeliverEvents(publisher, PREFIX)
    step(db, job, NOW)
    assert publisher.published == []
    step(db, job, seconds(1))
    assert [p["id"] for _, p in publisher.published] == list(ids)


def test_a_puback_that_arrives_during_a_step_does_not_send_the_state_twice(db):
    with db.sessions() as session, session.begin():
        session.add(Client(uuid=HALL, first_seen_at=NOW, last_seen_at=NOW, liveness="alive"))
    publisher = ScriptedPublisher(refuse_first=1)
    job = PublishClientStates(publisher, PREFIX)
    for n in range(4):
        step(db, job, seconds(n))
    assert [(t, p["publishedAt"]) for t, p in publisher.published] == [
        (state_topic(HALL), seconds(1).isoformat())]
    assert acknowledged(db, HALL)


# Client states -----------------------------------------------------------------------------


def publish_states(db, job: PublishClientStates, monitor: Monitor, client_uuid: str,
                   count: int, at: datetime = NOW) -> dict:
    """Step until the monitor has seen `count` states of the client and the last one was
    acknowledged; the last state it saw."""
    step(db, job, at)
    wait_until(lambda: len(monitor.on(state_topic(client_uuid))) >= count, timeout=5,
               message=f"state #{count} of {client_uuid}")
    wait_until(lambda: step(db, job, at) or acknowledged(db, client_uuid), timeout=5,
               message="signature stored after the PUBACK")
    return monitor.payloads(state_topic(client_uuid))[-1]


def test_a_client_state_is_published_with_the_documented_fields(db, publisher, monitors,
                                                                 clients):
    monitor = monitors()
    hall = clients(mqtt_reconnect_count=3, mqtt_last_disconnect_at=seconds(-60))
    state = publish_states(db, PublishClientStates(publisher, PREFIX), monitor, hall, 1)
    assert state == {
        "uuid": hall, "hostname": "hall-1", "status": "ok", "liveness": "alive",
        "processStatus": "running",
        "serviceFailed": {"open": False, "unit": None, "failedAt": None},
        "lastHeartbeatAt": "2026-11-24T12:00:00+00:00",
        "lastSeenAt": "2026-11-24T12:00:00+00:00",
        "mqttReconnectCount": 3, "mqttLastDisconnectAt": "2026-11-24T11:59:00+00:00",
        "publishedAt": "2026-11-24T12:00:00+00:00",
    }


def test_a_client_unknown_to_the_liveness_job_is_not_published_yet(db, publisher, monitors,
                                                                    clients):
    monitor = monitors()
    new, known = clients(liveness=None), clients()
    publish_states(db, PublishClientStates(publisher, PREFIX), monitor, known, 1)
    assert monitor.on(state_topic(new)) == []
    assert signature(db, new) is None


CHANGES = {
    "liveness": ({"liveness": "stale"}, "warn"),
    "process status": ({"process_status": "crashed"}, "warn"),
    "alert raised": ({"service_failed_at": NOW, "service_failed_unit": "player.service"},
                     "warn"),
    "reconnects": ({"mqtt_reconnect_count": 1}, "ok"),
    "down": ({"liveness": "down"}, "down"),
}


@pytest.mark.parametrize("values, status", CHANGES.values(), ids=CHANGES.keys())
def test_a_changed_client_is_published_again_and_an_unchanged_one_is_not(
        db, publisher, monitors, clients, values, status):
    monitor = monitors()
    hall, gym = clients(), clients(hostname="gym-1")
    job = PublishClientStates(publisher, PREFIX)
    publish_states(db, job, monitor, hall, 1)
    publish_states(db, job, monitor, gym, 1)
    # A heartbeat alone changes nothing a monitor alerts on: no message for it.
    change(db, gym, last_seen_at=seconds(30), last_heartbeat_at=seconds(30))
    change(db, hall, **values)
    state = publish_states(db, job, monitor, hall, 2, seconds(31))
    assert state["status"] == status
    assert state["publishedAt"] == seconds(31).isoformat()
    # Steps after it publish nothing more for either of them.
    step(db, job, seconds(32))
    marker = clients(hostname="marker")
    publish_states(db, job, monitor, marker, 1, seconds(33))
    assert len(monitor.on(state_topic(hall))) == 2
    assert len(monitor.on(state_topic(gym))) == 1


def test_an_acknowledged_alert_is_published_as_cleared(db, publisher, monitors, clients):
    monitor = monitors()
    hall = clients(service_failed_at=NOW, service_failed_unit="player.service")
    job = PublishClientStates(publisher, PREFIX)
    raised = publish_states(db, job, monitor, hall, 1)
    assert (raised["status"], raised["serviceFailed"]["open"]) == ("warn", True)
    change(db, hall, service_failed_acknowledged_at=seconds(60),
           service_failed_acknowledged_by="olga")
    cleared = publish_states(db, job, monitor, hall, 2, seconds(61))
    assert (cleared["status"], cleared["serviceFailed"]["open"]) == ("ok", False)


def test_a_monitor_that_subscribes_later_gets_the_retained_state(db, publisher, monitors,
                                                                  clients):
    hall = clients()
    job = PublishClientStates(publisher, PREFIX)
    publish_states(db, job, monitors(), hall, 1)
    change(db, hall, process_status="crashed")
    publish_states(db, job, monitors(), hall, 1, seconds(10))
    late = monitors()
    wait_until(lambda: late.on(state_topic(hall)), timeout=5, message="retained state")
    [(state, retained)] = late.on(state_topic(hall))
    assert retained
    assert (state["processStatus"], state["status"]) == ("crashed", "warn")


def test_client_states_wait_while_the_broker_is_away(db, publisher, no_broker, monitors,
                                                     clients):
    monitor = monitors()
    hall = clients()
    assert not step(db, PublishClientStates(no_broker, PREFIX))
    assert signature(db, hall) is None
    state = publish_states(db, PublishClientStates(publisher, PREFIX), monitor, hall, 1,
                           seconds(10))
    assert state["publishedAt"] == seconds(10).isoformat()

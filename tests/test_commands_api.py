"""The commands API with the real app, the real broker and both databases."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from core import commands
from core.clock import utc_now
from core.models import AuditEntry, Client, ClientCommand
from mqtt_client.dispatch import CommandDispatcher
from mqtt_client.publisher import Publisher
from scheduler.commands import DispatchQueuedCommands
from server import create_app
from tests.conftest import RunningListener, make_settings
from tests.helpers import close_web_app, free_port, wait_until

pytestmark = pytest.mark.broker


def make_app(db, broker, **overrides):
    app = create_app(make_settings(broker, db.url, SECRET_KEY="k" * 40, **overrides))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(db, broker):
    app = make_app(db, broker)
    yield app
    close_web_app(app)




@pytest.fixture
def device(db, broker):
    """Device A, known to the backend, subscribed to its command topic."""
    with db.sessions() as session, session.begin():
        now = utc_now()
        session.add(Client(uuid=broker.device_a.username, hostname="hall",
                           first_seen_at=now, last_seen_at=now))
    inbox = DeviceInbox(broker, broker.device_a)
    yield inbox
    inbox.close()


class DeviceInbox:
    def __init__(self, broker, login):
        self.uuid = login.username
        self.messages: list = []
        self.subscribed = threading.Event()
        self.client = broker.client(login)
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(broker.host, broker.port_for(login))
        self.client.subscribe(f"infoscreen/{self.uuid}/commands", qos=1)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, timeout=5, message="device subscribed")

    def publish(self, topic: str, payload: dict) -> None:
        """As the device, on its one connection: a second login as the same device would
        take this one over (the broker makes the client id the username)."""
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(timeout=5)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def post(app, path, headers, body=None):
    return app.test_client().post(path, headers=headers, json=body)


def state(db, command_id):
    with db.sessions() as session:
        return session.get(ClientCommand, command_id).state


def count(db, model, *where):
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def test_an_operator_restart_is_202_and_reaches_the_device_exactly_as_v1(db, app, auth, device):
    response = post(app, f"/api/clients/{device.uuid}/commands", auth["operator"],
                    {"action": "restart_app", "reason": "frozen"})
    assert response.status_code == 202, response.json
    command = response.json["command"]
    assert command["state"] == "queued" and command["requestedBy"] == "token:script-operator"
    wait_until(lambda: device.messages, timeout=5, message="command delivered")
    message = device.messages[0]
    assert message.qos == 1
    assert json.loads(message.payload) == {
        "schema_version": "1.0", "command_id": command["commandId"],
        "client_uuid": device.uuid, "action": "restart_app",
        "issued_at": command["issuedAt"].replace("+00:00", "Z")[:23] + "Z",
        "expires_at": command["expiresAt"].replace("+00:00", "Z")[:23] + "Z",
        "requested_by": "token:script-operator", "reason": "frozen",
    }
    assert 295 <= message.properties.MessageExpiryInterval <= 300
    wait_until(lambda: state(db, command["commandId"]) == "sent", timeout=5,
               message="PUBACK recorded")


def test_the_compatible_routes_issue_their_actions(db, app, auth, device):
    response = post(app, f"/api/clients/{device.uuid}/restart", auth["operator"])
    assert response.status_code == 202
    assert response.json["command"]["action"] == "reboot_host"
    assert response.json["command"]["reason"] == "requested by staff"
    shutdown = post(app, f"/api/clients/{device.uuid}/shutdown", auth["admin"],
                    {"reason": "holidays", "force": True})
    assert shutdown.status_code == 202
    assert shutdown.json["command"]["action"] == "shutdown_host"


def test_a_second_command_is_409_naming_the_blocking_one(db, app, auth, device):
    first = post(app, f"/api/clients/{device.uuid}/restart_app", auth["operator"]).json
    refused = post(app, f"/api/clients/{device.uuid}/restart", auth["operator"])
    assert refused.status_code == 409
    assert refused.json["blockingCommand"]["commandId"] == first["command"]["commandId"]
    assert int(refused.headers["Retry-After"]) == refused.json["retryAfter"] >= 1
    assert count(db, ClientCommand) == 1
    assert count(db, AuditEntry, AuditEntry.action == "command_refused") == 1


@pytest.mark.parametrize("body, role", [
    ({"action": "shutdown_host", "reason": "x"}, "operator"),
    ({"action": "restart_app", "reason": "x", "force": True}, "operator"),
    ({"action": "restart_app", "reason": "x"}, "viewer"),
])
def test_it_rejects_actions_above_the_callers_role(db, app, auth, device, body, role):
    response = post(app, f"/api/clients/{device.uuid}/commands", auth[role], body)
    assert response.status_code == 403
    assert count(db, ClientCommand) == 0


@pytest.mark.parametrize("body, field", [
    ({"reason": "x"}, "action"),
    ({"action": "format_disk", "reason": "x"}, "action"),
    ({"action": "restart_app"}, "reason"),
    ({"action": "restart_app", "reason": ""}, "reason"),
    ({"action": "restart_app", "reason": "x" * 501}, "reason"),
    ({"action": "restart_app", "reason": "a\x00b"}, "reason"),
    ({"action": "restart_app", "reason": "x", "force": "maybe"}, "force"),
])
def test_it_rejects_invalid_command_requests_naming_the_field(db, app, auth, device, body, field):
    response = post(app, f"/api/clients/{device.uuid}/commands", auth["admin"], body)
    assert response.status_code == 422
    assert field in json.dumps(response.json["errors"])
    assert count(db, ClientCommand) == 0


def test_it_rejects_a_command_for_an_unknown_client(db, app, auth):
    response = post(app, "/api/clients/00000000-0000-4000-8000-000000000000/restart",
                    auth["operator"])
    assert response.status_code == 404
    assert count(db, ClientCommand) == 0


def test_a_command_shows_with_its_history_and_in_the_clients_list(db, app, auth, device):
    issued = post(app, f"/api/clients/{device.uuid}/restart_app", auth["operator"]).json
    command_id = issued["command"]["commandId"]
    wait_until(lambda: state(db, command_id) == "sent", timeout=5)
    client = app.test_client()
    detail = client.get(f"/api/clients/commands/{command_id}", headers=auth["viewer"]).json
    assert [(h["state"], h["source"]) for h in detail["command"]["history"]] == [
        ("queued", "api"), ("sent", "broker")]
    listing = client.get(f"/api/clients/{device.uuid}/commands", headers=auth["viewer"]).json
    assert listing["total"] == 1 and listing["items"][0]["commandId"] == command_id
    assert client.get("/api/clients/commands/11111111-1111-4111-8111-111111111111",
                      headers=auth["viewer"]).status_code == 404


def test_a_command_issued_while_the_broker_is_away_is_published_when_it_is_back(
        db, broker, auth, device):
    away = make_app(db, broker, MQTT_PORT=free_port())  # nothing listens there
    try:
        issued = post(away, f"/api/clients/{device.uuid}/restart_app", auth["operator"])
        assert issued.status_code == 202
        command_id = issued.json["command"]["commandId"]
        assert state(db, command_id) == "queued" and device.messages == []
        # Cancel works while it is queued; a second one is refused.
        other = post(away, f"/api/clients/commands/{command_id}/cancel", auth["operator"])
        assert other.status_code == 200 and other.json["command"]["state"] == "cancelled"
        again = post(away, f"/api/clients/commands/{command_id}/cancel", auth["operator"])
        assert again.status_code == 409
    finally:
        close_web_app(away)

    # A forced second command stays queued too; the scheduler publishes it once it can.
    away = make_app(db, broker, MQTT_PORT=free_port())
    try:
        issued = post(away, f"/api/clients/{device.uuid}/restart_app", auth["admin"],
                      {"force": True})
        command_id = issued.json["command"]["commandId"]
    finally:
        close_web_app(away)
    settings = make_settings(broker, db.url)
    publisher = Publisher.start(settings, "scheduler-test")
    try:
        assert publisher.wait_connected(5)
        job = DispatchQueuedCommands(
            CommandDispatcher(publisher, db.sessions, settings.mqtt_topic_prefix), retry_after=5)
        with db.sessions() as session, session.begin():
            job(session, utc_now() + timedelta(seconds=6))
        wait_until(lambda: state(db, command_id) == "sent", timeout=5)
        wait_until(lambda: len(device.messages) == 1, timeout=5)
        assert json.loads(device.messages[0].payload)["command_id"] == command_id
    finally:
        publisher.stop()


def test_acks_from_the_device_move_the_command_to_completed(db, app, auth, device, broker):
    # A client id of its own: a persistent session left by an earlier test would hand this
    # listener everything queued since then before the acks it waits for.
    listener = RunningListener(make_settings(broker, db.url), f"acks-{uuid.uuid4().hex[:6]}")
    try:
        issued = post(app, f"/api/clients/{device.uuid}/restart_app", auth["operator"]).json
        command_id = issued["command"]["commandId"]
        for status in ("accepted", "execution_started", "completed"):
            for topic in ("commands/ack", "command/ack"):  # both, as deployed clients do
                device.publish(f"infoscreen/{device.uuid}/{topic}",
                               {"command_id": command_id, "status": status})
        wait_until(lambda: state(db, command_id) == "completed", timeout=5)
        detail = app.test_client().get(f"/api/clients/commands/{command_id}",
                                       headers=auth["viewer"]).json["command"]
        assert [h["state"] for h in detail["history"]] == [
            "queued", "sent", "accepted", "execution_started", "completed"]
        assert detail["acceptedAt"] and detail["executionStartedAt"] and detail["completedAt"]
    finally:
        listener.stop()


def test_every_command_request_is_audited(db, app, auth, device):
    issued = post(app, f"/api/clients/{device.uuid}/restart_app", auth["operator"]).json
    post(app, f"/api/clients/{device.uuid}/restart_app", auth["operator"])
    post(app, f"/api/clients/{device.uuid}/shutdown", auth["operator"])
    with db.sessions() as session:
        entries = session.execute(select(AuditEntry.actor, AuditEntry.action,
                                         AuditEntry.details)
                                  .where(AuditEntry.action.like("command%"))
                                  .order_by(AuditEntry.id)).all()
    assert [(a, b) for a, b, _ in entries] == [
        ("token:script-operator", "command_issued"),
        ("token:script-operator", "command_refused"),
        ("token:script-operator", "command_refused")]
    assert entries[0][2]["commandId"] == issued["command"]["commandId"]


def test_seconds_left_is_the_message_expiry():
    command = ClientCommand(expires_at=utc_now() + timedelta(seconds=90.5))
    assert commands.seconds_left(command, utc_now()) in (89, 90)


def test_a_command_to_an_offline_screen_expires_by_its_deadline(db, app, auth, broker):
    offline = broker.device_b.username  # known, but not connected
    with db.sessions() as session, session.begin():
        now = utc_now()
        session.add(Client(uuid=offline, first_seen_at=now, last_seen_at=now))
    issued = post(app, f"/api/clients/{offline}/restart_app", auth["operator"]).json["command"]
    wait_until(lambda: state(db, issued["commandId"]) == "sent", timeout=5,
               message="the broker took it")
    deadline = datetime.fromisoformat(issued["expiresAt"])
    with db.sessions() as session, session.begin():
        commands.sweep_expired_commands(session, deadline - timedelta(seconds=1))
    assert state(db, issued["commandId"]) == "sent"
    with db.sessions() as session, session.begin():
        commands.sweep_expired_commands(session, deadline)
    assert state(db, issued["commandId"]) == "expired"

"""Groups, group assignment on the retained group_id topic, capabilities and group commands,
with the real app, the real broker and both databases."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from core.clock import utc_now
from core.models import AuditEntry, Client, ClientCommand, CommandLock
from mqtt_client.dispatch import CommandDispatcher
from mqtt_client.publisher import Publisher
from scheduler.commands import PublishGroupAssignments
from tests.conftest import make_settings
from tests.helpers import close_web_app, free_port, wait_until
from tests.test_commands_api import count, make_app, post

pytestmark = pytest.mark.broker


@pytest.fixture
def app(db, broker):
    app = make_app(db, broker)
    yield app
    close_web_app(app)


class GroupInbox:
    """A device's one connection, subscribed to its retained group_id."""

    def __init__(self, broker, login):
        self.uuid = login.username
        self.messages: list[mqtt.MQTTMessage] = []
        subscribed = threading.Event()
        self.client = broker.client(login)
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(broker.host, broker.port_for(login))
        self.client.subscribe(f"infoscreen/{self.uuid}/group_id", qos=1)
        self.client.loop_start()
        wait_until(subscribed.is_set, timeout=5, message="device subscribed")

    def payloads(self) -> list[bytes]:
        """What was published while subscribed (other tests leave retained ones behind)."""
        return [m.payload for m in self.messages if not m.retain]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def add_clients(db, *uuids: str, **values) -> None:
    now = utc_now()
    with db.sessions() as session, session.begin():
        for i, uuid in enumerate(uuids):
            session.add(Client(uuid=uuid, hostname=f"screen-{i:02d}", first_seen_at=now,
                               last_seen_at=now, **values))


@pytest.fixture
def screen(db, broker):
    add_clients(db, broker.device_a.username)
    inbox = GroupInbox(broker, broker.device_a)
    yield inbox
    inbox.close()


def make_group(app, auth, name="Hall", **body) -> dict:
    response = post(app, "/api/groups", auth["admin"], {"name": name, **body})
    assert response.status_code == 201, response.json
    return response.json["group"]


def put(app, path, headers, body):
    return app.test_client().put(path, headers=headers, json=body)


def test_admins_manage_groups_and_others_may_only_read_them(db, app, auth):
    group = make_group(app, auth, description="entrance hall",
                       supportedActions=["restart_app", "reboot_host"])
    assert (group["name"], group["members"]) == ("Hall", 0)
    assert group["supportedActions"] == ["reboot_host", "restart_app"]
    assert post(app, "/api/groups", auth["operator"], {"name": "Gym"}).status_code == 403
    taken = post(app, "/api/groups", auth["admin"], {"name": "Hall"})
    assert taken.status_code == 409 and "exists already" in taken.json["message"]
    client = app.test_client()
    changed = client.patch(f"/api/groups/{group['id']}", headers=auth["admin"],
                           json={"name": "Main hall", "supportedActions": None})
    assert changed.status_code == 200
    assert (changed.json["group"]["name"], changed.json["group"]["supportedActions"]) == (
        "Main hall", None)
    assert client.patch(f"/api/groups/{group['id']}", headers=auth["operator"],
                        json={"name": "x"}).status_code == 403
    listing = client.get("/api/groups", headers=auth["viewer"]).json
    assert [g["name"] for g in listing["items"]] == ["Main hall"]
    assert client.delete("/api/groups/999", headers=auth["admin"]).status_code == 404
    assert client.delete(f"/api/groups/{group['id']}", headers=auth["admin"]).status_code == 204
    assert client.get("/api/groups", headers=auth["viewer"]).json["items"] == []
    assert count(db, AuditEntry, AuditEntry.action.like("group_%")) == 3


@pytest.mark.parametrize("body, field", [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "x" * 65}, "name"),
    ({"name": "a\x00b"}, "name"), ({"name": "ok", "supportedActions": ["dance"]},
                                   "supportedActions"),
    ({"name": "ok", "description": "d" * 501}, "description"),
])
def test_it_refuses_invalid_groups_naming_the_field_and_writes_nothing(db, app, auth, body,
                                                                       field):
    response = post(app, "/api/groups", auth["admin"], body)
    assert response.status_code == 422 and field in str(response.json["errors"])
    assert app.test_client().get("/api/groups", headers=auth["admin"]).json["items"] == []


def test_a_screen_is_told_its_group_on_the_retained_topic(db, broker, app, auth, screen):
    group = make_group(app, auth)
    response = put(app, f"/api/clients/{screen.uuid}/group", auth["operator"],
                   {"groupId": group["id"]})
    assert response.status_code == 200, response.json
    assert (response.json["groupId"], response.json["groupName"]) == (group["id"], "Hall")
    wait_until(lambda: screen.payloads() == [str(group["id"]).encode()], timeout=5,
               message="the group id arrives")
    with db.sessions() as session:  # the broker took it: the outbox is empty
        wait_until(lambda: not session.get(Client, screen.uuid, populate_existing=True)
                   .group_pending, timeout=5, message="PUBACK recorded")
    # It is retained: the screen's next connection gets it (one connection at a time: a
    # second login as the same device would take the first over).
    screen.close()
    later = GroupInbox(broker, broker.device_a)
    try:
        wait_until(lambda: later.messages, timeout=5, message="retained group id")
        assert [(m.retain, m.payload) for m in later.messages] == [
            (True, str(group["id"]).encode())]
    finally:
        later.close()


def test_leaving_a_group_clears_the_retained_group_id(db, app, auth, screen):
    group = make_group(app, auth)
    put(app, f"/api/clients/{screen.uuid}/group", auth["operator"], {"groupId": group["id"]})
    put(app, f"/api/clients/{screen.uuid}/group", auth["operator"], {"groupId": None})
    wait_until(lambda: screen.payloads()[-2:] == [str(group["id"]).encode(), b""], timeout=5,
               message="the empty retained payload")


def test_the_fleet_filters_by_group(db, app, auth):
    members = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(4)]
    add_clients(db, *members)
    group = make_group(app, auth)
    for uuid in members[:2]:
        assert put(app, f"/api/clients/{uuid}/group", auth["operator"],
                   {"groupId": group["id"]}).status_code == 200
    client = app.test_client()
    listed = client.get(f"/api/clients?groupId={group['id']}", headers=auth["viewer"]).json
    assert sorted(c["uuid"] for c in listed["items"]) == members[:2] and listed["total"] == 2
    assert client.get("/api/groups", headers=auth["viewer"]).json["items"][0]["members"] == 2
    assert client.get("/api/clients?groupId=x", headers=auth["viewer"]).status_code == 422


def test_assignment_refusals_write_nothing(db, app, auth, screen):
    path = f"/api/clients/{screen.uuid}/group"
    assert put(app, path, auth["viewer"], {"groupId": None}).status_code == 403
    unknown = put(app, path, auth["operator"], {"groupId": 42})
    assert unknown.status_code == 422 and "no group 42" in unknown.json["message"]
    assert put(app, path, auth["operator"], {"groupId": "hall"}).status_code == 422
    assert put(app, path, auth["operator"], {}).status_code == 422
    assert put(app, "/api/clients/00000000-0000-4000-8000-000000000009/group",
               auth["operator"], {"groupId": None}).status_code == 404
    with db.sessions() as session:
        client = session.get(Client, screen.uuid)
        assert (client.group_id, client.group_pending) == (None, False)


def test_an_assignment_made_while_the_broker_is_away_is_published_later(db, broker, auth,
                                                                        screen):
    away = make_app(db, broker, MQTT_PORT=free_port())
    try:
        group = make_group(away, auth)
        assert put(away, f"/api/clients/{screen.uuid}/group", auth["operator"],
                   {"groupId": group["id"]}).status_code == 200
    finally:
        close_web_app(away)
    assert screen.messages == []
    publisher = Publisher.start(make_settings(broker, db.url), "test-scheduler-groups")
    try:
        assert publisher.wait_connected(5)
        job = PublishGroupAssignments(CommandDispatcher(publisher, db.sessions, "infoscreen"),
                                      retry_after=10)
        with db.sessions() as session, session.begin():
            job(session, utc_now())
        wait_until(lambda: screen.payloads() == [str(group["id"]).encode()], timeout=5,
                   message="published by the scheduler")
    finally:
        publisher.stop()


def test_an_unsupported_action_is_422_before_the_lockout_unless_an_admin_forces_it(
        db, app, auth, screen):
    with db.sessions() as session, session.begin():
        session.get(Client, screen.uuid).unsupported_actions = ["restart_app"]
    path = f"/api/clients/{screen.uuid}/commands"
    client = app.test_client()
    shown = client.get(f"/api/clients/{screen.uuid}", headers=auth["viewer"]).json
    assert shown["supportedActions"] == ["reboot_host", "shutdown_host"]
    assert shown["supportedActionsSource"] == "learned"
    refused = post(app, path, auth["operator"], {"action": "restart_app", "reason": "frozen"})
    assert refused.status_code == 422
    assert "does not support restart_app" in refused.json["message"]
    assert count(db, ClientCommand) == count(db, CommandLock) == 0
    assert count(db, AuditEntry, AuditEntry.action == "command_refused") == 1
    assert post(app, path, auth["operator"],
                {"action": "restart_app", "reason": "x", "force": True}).status_code == 403
    forced = post(app, path, auth["admin"], {"action": "restart_app", "reason": "x",
                                             "force": True})
    assert forced.status_code == 202 and forced.json["command"]["forced"]


def test_admins_set_what_a_screen_supports(db, app, auth, screen):
    path = f"/api/clients/{screen.uuid}/capabilities"
    assert put(app, path, auth["operator"], {"supportedActions": ["reboot_host"]}
               ).status_code == 403
    assert put(app, path, auth["admin"], {"supportedActions": ["x"]}).status_code == 422
    response = put(app, path, auth["admin"], {"supportedActions": ["reboot_host"]})
    assert (response.json["supportedActions"], response.json["supportedActionsSource"]) == (
        ["reboot_host"], "admin")
    back = put(app, path, auth["admin"], {"supportedActions": None}).json
    assert (back["supportedActions"], back["supportedActionsSource"]) == (
        ["reboot_host", "shutdown_host", "restart_app"], "default")


def test_a_group_command_issues_per_member_and_says_what_it_refused(db, broker, auth):
    capped = make_app(db, broker, GROUP_COMMAND_MAX_PARALLEL=2)
    try:
        members = [f"00000000-0000-4000-8000-00000000001{i}" for i in range(5)]
        add_clients(db, *members)
        with db.sessions() as session, session.begin():
            session.get(Client, members[0]).reported_capabilities = ["reboot_host"]
        group = make_group(capped, auth)
        for uuid in members:
            put(capped, f"/api/clients/{uuid}/group", auth["operator"], {"groupId": group["id"]})
        busy = post(capped, f"/api/clients/{members[1]}/commands", auth["operator"],
                    {"action": "restart_app", "reason": "earlier"})
        assert busy.status_code == 202
        response = post(capped, f"/api/groups/{group['id']}/commands", auth["operator"],
                        {"action": "restart_app", "reason": "new content"})
        assert response.status_code == 202, response.json
        body = response.json
        assert body["maxParallel"] == 2
        assert [c["clientUuid"] for c in body["issued"]] == members[2:]
        assert [(r["clientUuid"], r["code"]) for r in body["refused"]] == [
            (members[0], "unsupported_action"), (members[1], "locked")]
        assert body["refused"][1]["retryAfter"] >= 1
        with db.sessions() as session:
            held = dict(session.execute(
                select(ClientCommand.client_uuid, ClientCommand.held)
                .where(ClientCommand.group_id == group["id"])).all())
        assert sorted(held.values()) == [False, False, True]
        shutdown = post(capped, f"/api/groups/{group['id']}/commands", auth["operator"],
                        {"action": "shutdown_host", "reason": "holidays"})
        assert shutdown.status_code == 403
        assert post(capped, "/api/groups/99/commands", auth["operator"],
                    {"action": "reboot_host", "reason": "x"}).status_code == 404
    finally:
        close_web_app(capped)

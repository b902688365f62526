"""The notifications API and page, on both databases: admins manage channels whose URLs are
never shown again, send a test to a real webhook, set rules and read the log; nobody else
may; what is refused writes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.clock import utc_now
from core.models import AuditEntry, Notification, NotificationChannel, NotificationRule
from core.notify_channels import ENV, SecretBox, create_channel
from core.staff import add_user
from tests.helpers import close_web_app, make_web_app
from tests.receivers import dead_url, webhook_server
from tests.test_command_confirmation import PASSWORD, csrf_token

SECRET = "hunter2-very-secret"


@pytest.fixture
def app(db):
    app = make_web_app(db.url, NOTIFY_SECRET_KEY="n" * 40, NOTIFY_SEND_TIMEOUT_SECONDS=3)
    yield app
    close_web_app(app)


def count(db, model) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def secret_url(port: int = 9) -> str:
    return f"json://ops:{SECRET}@127.0.0.1:{port}/hook"


def test_admins_add_list_change_and_delete_channels_never_seeing_the_url(db, app, auth):
    client = app.test_client()
    made = client.post("/api/notifications/channels", headers=auth["admin"],
                       json={"name": "ops", "url": secret_url(), "tags": ["Escalation"]})
    assert made.status_code == 201, made.json
    channel = made.json["channel"]
    assert channel["url"] == "json://ops:****@127.0.0.1:9/…" and channel["tags"] == ["escalation"]
    listed = client.get("/api/notifications/channels", headers=auth["admin"])
    assert SECRET not in listed.get_data(as_text=True)
    changed = client.patch(f"/api/notifications/channels/{channel['id']}", headers=auth["admin"],
                           json={"enabled": False, "name": "ops night"})
    assert changed.json["channel"]["enabled"] is False
    assert changed.json["channel"]["name"] == "ops night"
    assert client.delete(f"/api/notifications/channels/{channel['id']}",
                         headers=auth["admin"]).status_code == 204
    assert count(db, NotificationChannel) == 0
    with db.sessions() as session:
        entries = session.scalars(select(AuditEntry.details)).all()
    assert SECRET not in str(entries)


@pytest.mark.parametrize("body, status, said", [
    ({"name": "x", "url": "nope://secret-token@host"}, 422, "Apprise cannot use"),
    ({"name": "x", "url": "not a url"}, 422, "Apprise cannot use"),
    ({"name": "", "url": "json://h/"}, 422, "name"),
    ({"name": "x", "url": "json://h/", "tags": ["bad tag!"]}, 422, "tag"),
    ({"url": "json://h/"}, 422, "name"),
])
def test_a_bad_channel_is_refused_by_name_and_nothing_is_written(db, app, auth, body, status,
                                                                 said):
    response = app.test_client().post("/api/notifications/channels", headers=auth["admin"],
                                      json=body)
    assert response.status_code == status and said in response.get_data(as_text=True)
    assert "secret-token" not in response.get_data(as_text=True)
    assert count(db, NotificationChannel) == 0


def test_a_second_channel_of_the_same_name_is_a_conflict(db, app, auth):
    client = app.test_client()
    client.post("/api/notifications/channels", headers=auth["admin"],
                json={"name": "ops", "url": "json://h/"})
    again = client.post("/api/notifications/channels", headers=auth["admin"],
                        json={"name": "ops", "url": "json://other/"})
    assert again.status_code == 409 and count(db, NotificationChannel) == 1


def test_a_notify_urls_channel_can_only_be_switched_off_here(db, app, auth):
    with db.sessions() as session, session.begin():
        channel_id = create_channel(session, SecretBox("n" * 40), utc_now(), name="env one",
                                    url="json://h/", actor="NOTIFY_URLS", source=ENV).id
    client = app.test_client()
    path = f"/api/notifications/channels/{channel_id}"
    renamed = client.patch(path, headers=auth["admin"], json={"name": "other"})
    assert renamed.status_code == 409 and "NOTIFY_URLS" in renamed.json["message"]
    assert client.delete(path, headers=auth["admin"]).status_code == 409
    assert client.patch(path, headers=auth["admin"], json={"enabled": False}).status_code == 200


def test_a_test_message_reaches_a_real_webhook_and_a_dead_channel_says_why(db, app, auth):
    client = app.test_client()
    with webhook_server() as hook:
        live = client.post("/api/notifications/channels", headers=auth["admin"],
                           json={"name": "hook", "url": hook.url}).json["channel"]["id"]
        dead = client.post("/api/notifications/channels", headers=auth["admin"],
                           json={"name": "dead", "url": dead_url()}).json["channel"]["id"]
        ok = client.post(f"/api/notifications/channels/{live}/test", headers=auth["admin"])
        assert ok.json["ok"] is True and ok.json["error"] is None
        assert hook.received[0]["title"] == "Test notification"
    failed = client.post(f"/api/notifications/channels/{dead}/test", headers=auth["admin"])
    assert failed.json["ok"] is False and failed.json["error"]
    log = client.get("/api/notifications/log?perPage=10", headers=auth["admin"]).json
    assert log["total"] == 2
    assert [(i["kind"], i["state"]) for i in log["items"]] == [("test", "failed"),
                                                                ("test", "sent")]


def test_rules_are_listed_with_the_defaults_added_checked_and_removed(db, app, auth):
    client = app.test_client()
    listed = client.get("/api/notifications/rules", headers=auth["admin"]).json
    assert listed["defaults"] is True and "service_failed" in listed["items"][0]["eventTypes"]
    bad = client.post("/api/notifications/rules", headers=auth["admin"],
                      json={"eventTypes": ["client_down"], "channelIds": [42]})
    assert bad.status_code == 422 and "channel 42" in bad.json["message"]
    bad_group = client.post("/api/notifications/rules", headers=auth["admin"],
                            json={"groupId": 7})
    assert bad_group.status_code == 422
    bad_severity = client.post("/api/notifications/rules", headers=auth["admin"],
                               json={"minSeverity": "loud"})
    assert bad_severity.status_code == 422
    assert count(db, NotificationRule) == 0
    made = client.post("/api/notifications/rules", headers=auth["admin"],
                       json={"eventTypes": ["client_down"], "minSeverity": "error"})
    assert made.status_code == 201
    assert client.get("/api/notifications/rules", headers=auth["admin"]).json["defaults"] is False
    assert client.delete(f"/api/notifications/rules/{made.json['rule']['id']}",
                         headers=auth["admin"]).status_code == 204
    assert count(db, NotificationRule) == 0


@pytest.mark.parametrize("method, path", [
    ("get", "/api/notifications/channels"), ("post", "/api/notifications/channels"),
    ("patch", "/api/notifications/channels/1"), ("delete", "/api/notifications/channels/1"),
    ("post", "/api/notifications/channels/1/test"), ("get", "/api/notifications/log"),
    ("get", "/api/notifications/rules"), ("post", "/api/notifications/rules"),
    ("delete", "/api/notifications/rules/1"),
])
def test_only_admins_reach_the_api(app, auth, method, path):
    client = app.test_client()
    call = getattr(client, method)
    # A state change without a session fails the CSRF check before sign-in is asked.
    assert call(path).status_code in ((401,) if method == "get" else (401, 403))
    for role in ("viewer", "operator"):
        assert call(path, headers=auth[role], json={}).status_code == 403


# The page ---------------------------------------------------------------------------------


def sign_in(app, db, role="admin"):
    """A browser session of a user with `role`, and the CSRF token of its forms."""
    with db.sessions() as session, session.begin():
        add_user(session, f"{role}-user", role, PASSWORD, now=utc_now(), actor="test")
    client = app.test_client()
    assert client.post("/api/auth/login", json={"username": f"{role}-user",
                                                "password": PASSWORD}).status_code == 200
    page = client.get("/")
    return client, csrf_token(page) if page.status_code == 200 else ""


def test_the_page_adds_a_channel_tests_it_and_shows_the_log_escaped(db, app):
    client, token = sign_in(app, db)
    with webhook_server() as hook:
        added = client.post("/notifications/channels", data={
            "name": "hook", "url": hook.url, "tags": "escalation", "csrf_token": token},
            follow_redirects=True)
        assert "Channel hook added." in added.get_data(as_text=True)
        with db.sessions() as session:
            channel_id = session.scalar(select(NotificationChannel.id))
        tested = client.post(f"/notifications/channels/{channel_id}/test",
                             data={"csrf_token": token}, follow_redirects=True)
        assert "Test message sent to hook." in tested.get_data(as_text=True)
        assert len(hook.received) == 1
    with db.sessions() as session, session.begin():
        session.add(Notification(channel_id=channel_id, channel_shown="json://h/…",
                                 event_type="service_failed", severity="error", kind="alert",
                                 title="Service failed on <script>x</script>", body="b",
                                 state="sent", attempts=1, created_at=utc_now()))
    html = client.get("/notifications").get_data(as_text=True)
    assert f"127.0.0.1:{hook.port}/…" in html and "/hook" not in html
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html
    refused = client.post("/notifications/channels", data={"name": "x", "url": "json://h/"})
    assert refused.status_code == 403 and "CSRF" in refused.json["message"]
    assert count(db, NotificationChannel) == 1


def test_the_page_refuses_a_bad_url_with_a_message_and_writes_nothing(db, app):
    client, token = sign_in(app, db)
    page = client.post("/notifications/channels", data={
        "name": "bad", "url": "nope://secret-token@x", "csrf_token": token},
        follow_redirects=True).get_data(as_text=True)
    assert "Channel not added" in page and "secret-token" not in page
    assert count(db, NotificationChannel) == 0


def test_the_page_is_for_admins(db, app):
    assert app.test_client().get("/notifications").status_code == 302  # to sign-in
    client, _ = sign_in(app, db, "operator")
    assert client.get("/notifications").status_code == 403
    assert "Notifications</a>" not in client.get("/").get_data(as_text=True)

"""Sessions end when they should: at sign-out, on a new password or role, when disabled.

A copied session cookie (another browser, another address, after a restart) stops working
with the session it was copied from.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.clock import utc_now
from core.models import User
from core.staff import add_user, disable_user, enable_user, set_password, set_role
from tests.helpers import make_web_app

PASSWORD = "a long enough password"
NEW_PASSWORD = "another long password"


@pytest.fixture
def app(db):
    app = make_web_app(db.url)
    with db.sessions() as session, session.begin():
        add_user(session, "alice", "operator", PASSWORD, now=utc_now(), actor="test")
        add_user(session, "bob", "operator", PASSWORD, now=utc_now(), actor="test")
    return app


def sign_in(client, username="alice", password=PASSWORD):
    return client.post("/api/auth/login", json={"username": username, "password": password})


def signed_in(app, username="alice"):
    """A client signed in as `username`, and its CSRF token."""
    client = app.test_client()
    response = sign_in(client, username)
    assert response.status_code == 200, response.get_json()
    return client, response.get_json()["csrfToken"]


def copy_of(app, client, address="203.0.113.9"):
    """Another browser, at another address, presenting the same session cookie."""
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = address
    other.set_cookie("session", client.get_cookie("session").value)
    return other


def change(db, function, *args):
    with db.sessions() as session, session.begin():
        function(session, *args, now=utc_now(), actor="test")


def test_a_copied_cookie_works_while_its_session_lasts(app):
    client, _ = signed_in(app)
    copy = copy_of(app, client)
    assert copy.get("/api/auth/me").get_json()["name"] == "alice"


def test_a_signed_out_sessions_cookie_gets_401(app):
    client, csrf_token = signed_in(app)
    copy = copy_of(app, client)
    assert client.post("/api/auth/logout", headers={"X-CSRFToken": csrf_token}
                       ).status_code == 200
    assert copy.get("/api/auth/me").status_code == 401
    assert copy.get("/api/events").status_code == 401
    assert client.get("/api/auth/me").status_code == 401


def test_a_signed_out_sessions_cookie_is_sent_to_sign_in_from_pages(app):
    client, csrf_token = signed_in(app)
    copy = copy_of(app, client)
    signed_out = client.post("/logout", data={"csrf_token": csrf_token})  # the page's button
    assert signed_out.status_code == 302
    response = copy.get("/events")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_signed_out_sessions_cookie_stays_dead_after_a_server_restart(db, app):
    client, csrf_token = signed_in(app)
    cookie = client.get_cookie("session").value
    client.post("/api/auth/logout", headers={"X-CSRFToken": csrf_token})
    restarted = make_web_app(db.url).test_client()
    restarted.set_cookie("session", cookie)
    assert restarted.get("/api/auth/me").status_code == 401


def test_signing_out_ends_only_that_users_sessions(app):
    alice, csrf_token = signed_in(app)
    bob, _ = signed_in(app, "bob")
    alice.post("/api/auth/logout", headers={"X-CSRFToken": csrf_token})
    assert bob.get("/api/auth/me").get_json()["name"] == "bob"


def test_signing_in_again_after_signing_out_works(app):
    client, csrf_token = signed_in(app)
    client.post("/api/auth/logout", headers={"X-CSRFToken": csrf_token})
    assert sign_in(client).status_code == 200
    assert client.get("/api/auth/me").status_code == 200


def test_a_password_change_ends_existing_sessions(db, app):
    client, _ = signed_in(app)
    copy = copy_of(app, client)
    change(db, set_password, "alice", NEW_PASSWORD)
    assert client.get("/api/auth/me").status_code == 401
    assert copy.get("/api/auth/me").status_code == 401
    assert sign_in(app.test_client()).status_code == 401
    assert sign_in(app.test_client(), password=NEW_PASSWORD).status_code == 200


def test_a_role_change_ends_existing_sessions_and_applies_at_the_next_sign_in(db, app):
    client, _ = signed_in(app)
    change(db, set_role, "alice", "viewer")
    assert client.get("/api/auth/me").status_code == 401
    assert sign_in(client).status_code == 200
    assert client.get("/api/auth/me").get_json()["role"] == "viewer"


def test_disabling_a_user_ends_existing_sessions_and_sign_in(db, app):
    client, _ = signed_in(app)
    copy = copy_of(app, client)
    change(db, disable_user, "alice")
    assert client.get("/api/auth/me").status_code == 401
    assert copy.get("/").headers["Location"].startswith("/login")
    assert sign_in(app.test_client()).status_code == 401


def test_enabling_lets_the_user_sign_in_again_but_revives_no_old_session(db, app):
    client, _ = signed_in(app)
    old_cookie = client.get_cookie("session").value
    change(db, disable_user, "alice")
    change(db, enable_user, "alice")
    again = app.test_client()
    assert sign_in(again).status_code == 200
    assert again.get("/api/auth/me").get_json()["name"] == "alice"
    old = app.test_client()
    old.set_cookie("session", old_cookie)
    assert old.get("/api/auth/me").status_code == 401


def test_a_cookie_without_a_session_version_must_sign_in_again(db, app):
    # What a cookie from before session versions holds: the user id alone.
    with db.sessions() as session:
        alice_id = session.scalar(select(User.id).where(User.username == "alice"))
    client = app.test_client()
    with client.session_transaction() as cookie_session:
        cookie_session["_user_id"] = str(alice_id)
        cookie_session["_fresh"] = True
    assert client.get("/api/auth/me").status_code == 401

"""Sign-in, roles, CSRF and throttling of the web app, with the real app on both databases."""

from __future__ import annotations

import re

import pytest

from core.clock import utc_now
from core.config import Settings
from core.staff import add_user, create_token
from server import create_app
from tests.helpers import make_web_app

PASSWORD = "a long enough password"
# Health checks, and sign-in itself.
PUBLIC = {"/healthz", "/readyz", "/login", "/api/auth/login", "/static/<path:filename>"}


@pytest.fixture
def app(db):
    app = make_web_app(db.url)
    with db.sessions() as session, session.begin():
        for role in ("viewer", "operator", "admin"):
            add_user(session, role, role, PASSWORD, now=utc_now(), actor="test")
    return app


@pytest.fixture
def tokens(db, app):
    with db.sessions() as session, session.begin():
        return {role: create_token(session, f"script-{role}", role, now=utc_now(), actor="test")
                for role in ("viewer", "operator", "admin")}


def sign_in(client, username: str) -> str:
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["csrfToken"]


# Routes for scripts and tools: 401, not a redirect to the sign-in page. /screenshots/ are the
# deployed server's picture routes, which its tools call.
SCRIPT_ROUTES = ("/api/", "/screenshots/", "/metrics")


def protected_routes(app) -> list[tuple[str, str, str]]:
    """(method, path, required role) of every route but the public ones."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC:
            continue
        view = app.view_functions[rule.endpoint]
        # An integer placeholder must look like one to reach the view at all.
        path = re.sub(r"<int:[^>]+>", "1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path, getattr(view, "required_role", None)))
    return routes


def test_every_route_but_the_public_ones_declares_a_role(app):
    routes = protected_routes(app)
    assert routes, "no protected routes found"
    assert [r for r in routes if r[2] is None] == []


def test_every_protected_route_refuses_anonymous_users(app):
    client = app.test_client()
    for method, path, _ in protected_routes(app):
        response = client.open(path, method=method)
        if path.startswith(SCRIPT_ROUTES):
            # A state change without a session fails the CSRF check before sign-in is asked.
            expected = (401,) if method == "GET" else (401, 403)
            assert response.status_code in expected, (method, path)
        else:
            assert response.status_code in (302, 400, 403, 401), (method, path)
            if method == "GET":
                assert response.headers["Location"].startswith("/login"), path


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_protected_api_route_checks_the_role(app, tokens, role):
    from core.staff import role_at_least

    client = app.test_client()
    for method, path, required in protected_routes(app):
        if not path.startswith(SCRIPT_ROUTES) or path == "/api/auth/logout":
            continue
        response = client.open(path, method=method,
                               headers={"Authorization": f"Bearer {tokens[role]}"})
        # Placeholders stay literal (a 404 for client "<string:client_uuid>" is fine): what
        # matters is whether the role got past the check.
        if role_at_least(role, required):
            assert response.status_code not in (401, 403), (role, method, path)
        else:
            assert response.status_code == 403, (role, method, path, response.status)


def test_sign_in_sets_a_safe_session_cookie_and_knows_the_role(app):
    client = app.test_client()
    response = client.post("/api/auth/login", json={"username": "operator", "password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development over plain HTTP
    me = client.get("/api/auth/me").get_json()
    assert (me["name"], me["role"], me["via"]) == ("operator", "operator", "session")


def test_production_cookies_are_secure(db):
    settings = Settings.model_validate({"DATABASE_URL": db.url, "SECRET_KEY": "k" * 40,
                                        "INFOSCREEN_ENV": "production", "MQTT_USER": "svc",
                                        "MQTT_PASSWORD": "p" * 40})
    assert create_app(settings).config["SESSION_COOKIE_SECURE"] is True


def test_a_wrong_password_is_refused_and_signs_nobody_in(app):
    client = app.test_client()
    response = client.post("/api/auth/login", json={"username": "admin", "password": "nope"})
    assert response.status_code == 401
    assert client.get("/api/auth/me").status_code == 401


def test_it_rejects_a_login_without_json_credentials(app):
    response = app.test_client().post("/api/auth/login", data="username=admin")
    assert response.status_code == 400
    assert "username and password" in response.get_json()["message"]


def test_ten_wrong_passwords_are_throttled(app):
    client = app.test_client()
    codes = [client.post("/api/auth/login", json={"username": "admin", "password": "bad"})
             .status_code for _ in range(11)]
    assert codes[:10] == [401] * 10
    assert codes[10] == 429
    # ...and the right password waits too: the account's budget is spent.
    assert client.post("/api/auth/login", json={"username": "admin", "password": PASSWORD}
                       ).status_code == 429


def test_a_state_change_without_its_csrf_token_gets_403(app):
    client = app.test_client()
    csrf_token = sign_in(client, "viewer")
    response = client.post("/api/auth/logout")
    assert response.status_code == 403
    assert "CSRF" in response.get_json()["message"]
    assert client.get("/api/auth/me").status_code == 200  # still signed in
    response = client.post("/api/auth/logout", headers={"X-CSRFToken": csrf_token})
    assert response.status_code == 200
    assert client.get("/api/auth/me").status_code == 401


def test_a_bearer_token_needs_no_csrf_token(app, tokens):
    response = app.test_client().get("/api/auth/me",
                                     headers={"Authorization": f"Bearer {tokens['viewer']}"})
    assert response.get_json()["via"] == "token"


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer ist_x_y", "Basic abc",
                                    "Bearer ist_000000000000_secret"])
def test_it_refuses_bad_authorization_headers(app, header):
    response = app.test_client().get("/api/auth/me", headers={"Authorization": header})
    assert response.status_code == 401


def test_the_sign_in_form_signs_in_and_goes_to_the_page_asked_for(app):
    client = app.test_client()
    assert client.get("/").headers["Location"] == "/login?next=/"
    page = client.get("/login?next=/")
    assert page.status_code == 200 and b'name="csrf_token"' in page.data
    token = page.data.split(b'name="csrf_token" value="')[1].split(b'"')[0].decode()
    response = client.post("/login", data={"username": "viewer", "password": PASSWORD,
                                           "next": "/", "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert b"viewer (viewer)" in client.get("/").data


def test_the_sign_in_form_never_redirects_off_site(app):
    client = app.test_client()
    page = client.get("/login")
    token = page.data.split(b'name="csrf_token" value="')[1].split(b'"')[0].decode()
    response = client.post("/login", data={"username": "viewer", "password": PASSWORD,
                                           "next": "//evil.example/", "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_the_sign_in_form_without_csrf_token_is_refused(app):
    response = app.test_client().post("/login", data={"username": "viewer",
                                                      "password": PASSWORD})
    assert response.status_code == 403


def test_the_audit_log_is_for_admins(app, tokens):
    client = app.test_client()
    body = client.get("/api/audit", headers={"Authorization": f"Bearer {tokens['admin']}"}
                      ).get_json()
    assert body["total"] >= 6  # three users and three tokens were created
    assert {item["action"] for item in body["items"]} == {"user.set", "token.create"}

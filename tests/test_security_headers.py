"""Every response carries the security headers: every route of the url map, anonymous and
signed in, errors and static files, on both databases."""

from __future__ import annotations

import pytest

from core.clock import utc_now
from core.staff import create_token
from server.security_headers import SECURITY_HEADERS


@pytest.fixture
def admin_token(db):
    with db.sessions() as session, session.begin():
        return create_token(session, "headers", "admin", now=utc_now(), actor="test")


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every rule; placeholders stay literal (a 404 is a response too)."""
    return [(method, rule.rule) for rule in app.url_map.iter_rules()
            for method in sorted(rule.methods - {"OPTIONS"})]


def missing_headers(response) -> dict[str, str | None]:
    return {name: response.headers.get(name) for name, value in SECURITY_HEADERS.items()
            if response.headers.get(name) != value}


def test_the_policy_forbids_framing_and_inline_code():
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert SECURITY_HEADERS["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_every_route_answers_with_the_security_headers(app, admin_token, who):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {admin_token}"} if who == "admin" else {}
    routes = every_route(app)
    assert len(routes) > 20
    problems = {}
    for method, path in routes:
        response = client.open(path, method=method, headers=headers)
        if missing := missing_headers(response):
            problems[(method, path, response.status_code)] = missing
    assert problems == {}


@pytest.mark.parametrize("path", ["/static/app.css", "/static/commands.js", "/static/nope.js",
                                  "/no/such/page", "/api/no/such/route"])
def test_static_files_and_errors_carry_them_too(app, path):
    response = app.test_client().get(path)
    assert response.status_code in (200, 404)
    assert missing_headers(response) == {}


def test_refusals_carry_them_too(app):
    client = app.test_client()
    responses = [
        client.delete("/healthz", headers={"Authorization": "Bearer x"}),  # 405
        client.post("/login", data={"username": "x", "password": "y"}),  # CSRF 403
        client.get("/api/auth/me"),  # 401
    ]
    assert [r.status_code for r in responses] == [405, 403, 401]
    assert all(missing_headers(r) == {} for r in responses)

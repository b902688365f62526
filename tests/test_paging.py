"""Every paged route bounds its page number: a 4xx or the first page, never a 500."""

from __future__ import annotations

import json

import pytest

from core.clock import utc_now
from core.staff import create_token

HUGE = "100000000000000000000"
BAD_PAGES = [HUGE, "-1", "0", "1000001", "abc", "9" * 5000]
A_CLIENT = "00000000-0000-0000-0000-000000000001"
# Paged API routes outside flask-smorest, so not in /api/openapi.json.
OTHER_PAGED_API = {"/api/audit"}
PAGED_PAGES = ["/", "/events"]


@pytest.fixture
def admin(db, app) -> dict[str, str]:
    with db.sessions() as session, session.begin():
        token = create_token(session, "pager", "admin", now=utc_now(), actor="test")
    return {"Authorization": f"Bearer {token}"}


def paged_api_paths(app, headers) -> set[str]:
    """Every API path that takes ?page=, from the API's own description."""
    spec = app.test_client().get("/api/openapi.json", headers=headers).get_json()
    return {
        path.replace("{client_uuid}", A_CLIENT)
        for path, item in spec["paths"].items()
        for method, operation in item.items() if method == "get"
        if any(p["name"] == "page" and p["in"] == "query" for p in operation.get("parameters", []))
    } | OTHER_PAGED_API


def test_the_paged_api_routes_are_the_ones_known(app, admin):
    # A new paged route is covered by the tests below without being listed here.
    assert paged_api_paths(app, admin) >= {
        "/api/clients", "/api/events", "/api/monitoring/overview",
        f"/api/clients/{A_CLIENT}/commands", "/api/audit"}


@pytest.mark.parametrize("page", BAD_PAGES)
def test_every_paged_api_route_answers_422_to_a_bad_page_number(app, admin, page):
    client = app.test_client()
    for path in sorted(paged_api_paths(app, admin)):
        response = client.get(f"{path}?page={page}", headers=admin)
        assert response.status_code == 422, (path, response.status_code)
        body = response.get_json()
        assert set(body) == {"error", "message", "errors"}, path
        assert body["error"] == "Unprocessable Entity"
        assert "page" in json.dumps(body["errors"]["query"]), path


@pytest.mark.parametrize("per_page", ["0", "-5", "201", HUGE])
def test_the_audit_log_answers_422_to_a_page_size_out_of_range(app, admin, per_page):
    response = app.test_client().get(f"/api/audit?perPage={per_page}", headers=admin)
    assert response.status_code == 422
    assert "perPage" in response.get_json()["errors"]["query"]


def test_the_audit_log_pages_within_range(app, admin):
    client = app.test_client()
    body = client.get("/api/audit?page=1&perPage=1&unknown=x", headers=admin).get_json()
    assert (body["page"], body["perPage"], body["total"], len(body["items"])) == (1, 1, 1, 1)
    assert client.get("/api/audit?page=1000000", headers=admin).get_json()["items"] == []


@pytest.mark.parametrize("page", BAD_PAGES)
@pytest.mark.parametrize("path", PAGED_PAGES)
def test_every_paged_page_refuses_a_bad_page_number(app, admin, path, page):
    response = app.test_client().get(f"{path}?page={page}", headers=admin)
    assert response.status_code == 400
    assert response.get_json()["message"].startswith("page: ")

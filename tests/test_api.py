"""The fleet API with the real app, the real broker and both databases."""

from __future__ import annotations

import json
import uuid as uuidlib
from datetime import timedelta

import pytest

from core.clock import utc_now
from core.contract import parse_message
from core.ingest import apply_batch
from core.models import Client
from core.staff import add_user
from server import create_app
from tests.conftest import RunningListener, make_settings
from tests.helpers import wait_until

pytestmark = pytest.mark.broker


@pytest.fixture
def app(db, broker):
    app = create_app(make_settings(broker, db.url, SECRET_KEY="k" * 40))
    app.config["TESTING"] = True
    return app


def alert_open(db, client_uuid: str) -> bool:
    with db.sessions() as session:
        client = session.get(Client, client_uuid)
        return client is not None and client.service_failed_open


def ingest(db, client_uuid: str, suffix: str, payload: dict | bytes, at=None):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    message = parse_message(f"infoscreen/{client_uuid}/{suffix}", raw, at or utc_now())
    with db.sessions() as session, session.begin():
        apply_batch(session, [message], now=utc_now())


def screen(db, n: int, hostname: str, **health) -> str:
    client_uuid = f"00000000-0000-0000-0000-{n:012d}"
    ingest(db, client_uuid, "discovery", {"uuid": client_uuid, "hostname": hostname,
                                          "ip": f"10.0.0.{n}", "software_version": "1"})
    if health:
        ingest(db, client_uuid, "health", {"timestamp": "2026-11-24T12:00:00Z", **health})
    return client_uuid


def test_clients_are_listed_in_camel_case_with_their_state(db, app, auth):
    screen(db, 1, "hall", process_status="running",
           broker_connection={"reconnect_count": 3, "last_disconnect_at": None})
    body = app.test_client().get("/api/clients", headers=auth["viewer"]).get_json()
    assert body["total"] == 1 and body["page"] == 1 and body["perPage"] == 50
    item = body["items"][0]
    assert item["hostname"] == "hall" and item["status"] == "alive"
    assert item["mqttReconnectCount"] == 3 and item["processStatus"] == "running"


def test_clients_filter_search_and_page(db, app, auth):
    for n in range(1, 6):
        screen(db, n, f"screen-{n}")
    client = app.test_client()
    body = client.get("/api/clients?search=screen-3", headers=auth["viewer"]).get_json()
    assert [c["hostname"] for c in body["items"]] == ["screen-3"]
    body = client.get("/api/clients?perPage=2&page=3", headers=auth["viewer"]).get_json()
    assert body["total"] == 5 and [c["hostname"] for c in body["items"]] == ["screen-5"]
    assert client.get("/api/clients?status=down", headers=auth["viewer"]).get_json()["total"] == 0


@pytest.mark.parametrize("query", ["perPage=0", "perPage=10000", "page=0", "status=asleep",
                                   "sort=password", "page=abc"])
def test_it_rejects_bad_query_parameters_naming_them(db, app, auth, query):
    response = app.test_client().get(f"/api/clients?{query}", headers=auth["viewer"])
    assert response.status_code == 422
    body = response.get_json()
    assert body["error"] == "Unprocessable Entity"
    assert query.split("=")[0] in json.dumps(body["errors"])


def test_an_unknown_client_is_a_404_in_the_json_error_shape(app, auth):
    response = app.test_client().get("/api/clients/00000000-0000-0000-0000-000000000099",
                                     headers=auth["viewer"])
    assert response.status_code == 404
    assert response.get_json()["message"].startswith("no client")


def test_client_detail_has_the_health_document(db, app, auth):
    client_uuid = screen(db, 1, "hall", process_status="crashed", cpu_percent=97)
    body = app.test_client().get(f"/api/clients/{client_uuid}", headers=auth["viewer"]
                                 ).get_json()
    assert body["health"]["cpu_percent"] == 97 and body["processStatus"] == "crashed"


def test_crashed_clients_carry_their_reason(db, app, auth):
    screen(db, 1, "hall", process_status="crashed")
    stale = screen(db, 2, "gym")
    ingest(db, stale, "heartbeat", {}, at=utc_now() - timedelta(minutes=10))
    body = app.test_client().get("/api/clients/crashed", headers=auth["viewer"]).get_json()
    assert {(c["hostname"], c["reason"]) for c in body["items"]} == {
        ("hall", "process_crashed"), ("gym", "heartbeat_stale")}


def test_the_overview_counts_and_lists_reconnect_figures(db, app, auth):
    screen(db, 1, "hall", process_status="crashed",
           broker_connection={"reconnect_count": 9, "last_disconnect_at": "2026-11-24T10:00:00Z"})
    screen(db, 2, "gym", process_status="running",
           broker_connection={"reconnect_count": 2, "last_disconnect_at": None})
    client = app.test_client()
    body = client.get("/api/monitoring/overview", headers=auth["viewer"]).get_json()
    assert body["counts"]["total"] == 2 and body["counts"]["processCrashed"] == 1
    assert [c["mqttReconnectCount"] for c in body["clients"]] == [9, 2]  # most first
    body = client.get("/api/monitoring/overview?perPage=1&page=2", headers=auth["viewer"]
                      ).get_json()
    assert body["total"] == 2 and [c["hostname"] for c in body["clients"]] == ["gym"]


def test_events_are_paged_newest_first(db, app, auth):
    screen(db, 1, "hall")
    screen(db, 2, "gym")
    body = app.test_client().get("/api/events?perPage=1", headers=auth["viewer"]).get_json()
    assert body["total"] == 2 and body["items"][0]["type"] == "client_registered"


def test_the_openapi_document_describes_the_api_for_signed_in_callers(app, auth):
    client = app.test_client()
    assert client.get("/api/openapi.json").status_code == 401
    spec = client.get("/api/openapi.json", headers=auth["viewer"]).get_json()
    assert {"/api/clients", "/api/clients/crashed", "/api/monitoring/overview",
            "/api/clients/{client_uuid}/clear_service_failed"} <= set(spec["paths"])


FAILED = {"unit": "<img src=x onerror=alert(1)>", "failed_at": "2026-11-24T11:00:00Z"}


def test_a_viewer_cannot_acknowledge(db, app, auth):
    client_uuid = screen(db, 1, "hall")
    ingest(db, client_uuid, "service_failed", FAILED)
    response = app.test_client().post(f"/api/clients/{client_uuid}/clear_service_failed",
                                      headers=auth["viewer"])
    assert response.status_code == 403
    assert app.test_client().get("/api/clients/service_failed", headers=auth["viewer"]
                                 ).get_json()["items"][0]["serviceFailedOpen"]


def test_acknowledging_nothing_is_refused(db, app, auth):
    client_uuid = screen(db, 1, "hall")
    client = app.test_client()
    assert client.post(f"/api/clients/{client_uuid}/clear_service_failed",
                       headers=auth["operator"]).status_code == 409
    assert client.post("/api/clients/00000000-0000-0000-0000-000000000099/clear_service_failed",
                       headers=auth["operator"]).status_code == 404


def test_an_acknowledged_alert_is_gone_at_the_broker_and_after_a_listener_restart(
    db, broker, app, auth, settings, publish_as
):
    device = broker.device_a.username
    running = RunningListener(settings, f"ack-{uuidlib.uuid4().hex[:6]}")
    try:
        publish_as(broker.device_a).publish(f"infoscreen/{device}/service_failed", FAILED,
                                            retain=True)
        wait_until(lambda: alert_open(db, device), timeout=5, message="alert raised")
        response = app.test_client().post(f"/api/clients/{device}/clear_service_failed",
                                          headers=auth["operator"])
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["retainedCleared"] is True
        wait_until(lambda: not alert_open(db, device), timeout=5, message="alert closed")
    finally:
        running.stop()
    # The broker forgot the report: a new subscriber gets no retained service_failed.
    seen: list = []
    subacks: list = []
    probe = broker.client(broker.monitor)
    probe.on_message = lambda c, u, m: seen.append(m.payload)
    probe.on_subscribe = lambda c, u, mid, codes, p: subacks.append(mid)
    probe.connect(broker.host, broker.port_for(broker.monitor))
    probe.loop_start()
    probe.subscribe(f"infoscreen/{device}/service_failed", qos=1)
    # Retained messages follow their SUBACK: a second SUBACK means they would have come.
    probe.subscribe("infoscreen/monitoring/events", qos=1)
    wait_until(lambda: len(subacks) == 2, timeout=5, message="two SUBACKs")
    probe.disconnect()
    probe.loop_stop()
    assert [p for p in seen if p] == []
    # A restarted listener does not raise it again.
    running.start()
    try:
        assert not alert_open(db, device)
    finally:
        running.stop()
    audit = app.test_client().get("/api/audit", headers=auth["admin"]).get_json()
    assert any(e["action"] == "service_failed.acknowledge" and e["actor"] == "token:script-operator"
               for e in audit["items"])


def test_a_session_acknowledgement_without_csrf_token_gets_403(db, app):
    client_uuid = screen(db, 1, "hall")
    ingest(db, client_uuid, "service_failed", FAILED)
    with db.sessions() as session, session.begin():
        add_user(session, "olga", "operator", "a long enough password", now=utc_now(),
                 actor="test")
    client = app.test_client()
    client.post("/api/auth/login", json={"username": "olga",
                                         "password": "a long enough password"})
    response = client.post(f"/api/clients/{client_uuid}/clear_service_failed")
    assert response.status_code == 403
    assert alert_open(db, client_uuid)


def test_device_supplied_text_comes_back_as_data_not_markup(db, app, auth):
    client_uuid = screen(db, 1, "hall")
    ingest(db, client_uuid, "service_failed", FAILED)
    response = app.test_client().get("/api/clients/service_failed", headers=auth["viewer"])
    assert response.mimetype == "application/json"
    assert response.get_json()["items"][0]["serviceFailed"]["unit"] == FAILED["unit"]




@pytest.mark.parametrize("query", ["search=a%00b", "clientUuid=x", "clientUuid=%00"])
def test_it_rejects_nul_and_malformed_ids_in_queries(app, auth, query):
    path = "/api/events" if "clientUuid" in query else "/api/clients"
    response = app.test_client().get(f"{path}?{query}", headers=auth["viewer"])
    assert response.status_code == 422


@pytest.mark.parametrize("client_id", ["not-a-uuid", "00000000-0000-0000-0000-00000000000%00"])
def test_a_path_that_is_not_a_client_uuid_is_a_404(app, auth, client_id):
    client = app.test_client()
    assert client.get(f"/api/clients/{client_id}", headers=auth["viewer"]).status_code == 404
    assert client.post(f"/api/clients/{client_id}/clear_service_failed",
                       headers=auth["operator"]).status_code == 404

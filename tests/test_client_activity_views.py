"""The client page's activity chart and GET /api/clients/<uuid>/activity, on both databases."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import delete

from core.activity import bucket_start
from core.clock import utc_now
from core.contract import parse_message
from core.ingest import apply_batch
from core.models import ClientActivity
from core.staff import add_user, create_token
from server.charts import duration_text, nice_ceiling

SCREEN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
UNKNOWN = "00000000-0000-0000-0000-000000000099"
PASSWORD = "a long enough password"


@pytest.fixture
def viewer(db, app):
    """A test client signed in as a viewer, and a viewer's bearer token."""
    with db.sessions() as session, session.begin():
        add_user(session, "victor", "viewer", PASSWORD, now=utc_now(), actor="test")
        token = create_token(session, "script", "viewer", now=utc_now(), actor="test")
    client = app.test_client()
    assert client.post("/api/auth/login", json={"username": "victor", "password": PASSWORD}
                       ).status_code == 200
    return client, {"Authorization": f"Bearer {token}"}


def heartbeats(db, *times, hostname: str = "screen-hall") -> None:
    first = min(times)
    messages = [parse_message(f"infoscreen/{SCREEN}/discovery", json.dumps({
        "uuid": SCREEN, "hostname": hostname, "ip": "10.0.0.7", "software_version": "1"}
    ).encode(), first, retained=True)]  # known from then on, but not a sign of life
    messages += [parse_message(f"infoscreen/{SCREEN}/heartbeat", b"{}", at) for at in times]
    with db.sessions() as session, session.begin():
        apply_batch(session, messages, now=utc_now())


def a_past_bucket():
    """The start of a bucket 20 minutes back: inside the window whenever the request runs."""
    return bucket_start(utc_now()) - timedelta(minutes=20)


def test_the_api_answers_with_every_bucket_zero_filled(db, app, viewer):
    _, token = viewer
    past = a_past_bucket()
    heartbeats(db, past - timedelta(hours=1), past + timedelta(seconds=10),
               past + timedelta(seconds=40))
    response = app.test_client().get(f"/api/clients/{SCREEN}/activity", headers=token)
    assert response.status_code == 200
    body = response.get_json()
    assert body["clientUuid"] == SCREEN and body["bucketSeconds"] == 300
    assert len(body["buckets"]) == 288
    assert body["heartbeats"] == 3 and body["onlineSeconds"] == 2 * 300
    by_start = {b["start"]: b for b in body["buckets"]}
    assert by_start[past.isoformat()] == {"start": past.isoformat(), "heartbeats": 2,
                                          "messages": 2, "state": "online"}
    assert by_start[(past - timedelta(minutes=5)).isoformat()]["state"] == "offline"
    assert body["buckets"][0] == {"start": body["start"], "heartbeats": 0, "messages": 0,
                                  "state": "no_data"}  # before the client was first seen


def test_the_api_answers_404_for_an_unknown_client(app, viewer):
    _, token = viewer
    client = app.test_client()
    response = client.get(f"/api/clients/{UNKNOWN}/activity", headers=token)
    assert response.status_code == 404
    assert response.get_json()["message"].startswith("no client")
    assert client.get("/api/clients/not-a-uuid/activity", headers=token).status_code == 404


def test_the_api_needs_a_signed_in_caller(app):
    assert app.test_client().get(f"/api/clients/{SCREEN}/activity").status_code == 401


def test_the_client_page_shows_the_chart_with_its_summary(db, viewer):
    client, _ = viewer
    past = a_past_bucket()
    heartbeats(db, past + timedelta(seconds=5), past + timedelta(seconds=35),
               past + timedelta(minutes=5, seconds=5))
    page = client.get(f"/clients/{SCREEN}").get_data(as_text=True)
    svg = re.search(r'<figure class="activity".*?</figure>', page, re.S).group(0)
    assert 'role="img"' in svg and 'aria-labelledby="activity-title activity-desc"' in svg
    assert "online 10 min of the last 24 h; 3 heartbeats" in svg
    assert len(re.findall(r'<rect class="bar"', svg)) == 2
    assert f"{past:%H:%M} UTC: 2 heartbeats, 2 messages" in svg
    assert re.search(r'<rect class="strip online"', svg)
    assert re.search(r'<rect class="strip offline"', svg)
    assert ">UTC</text>" in svg and re.search(r">\d\d:00</text>", svg)


def test_the_chart_carries_no_device_text(db, viewer):
    client, _ = viewer
    heartbeats(db, a_past_bucket(), hostname="<svg onload=alert(1)>")
    page = client.get(f"/clients/{SCREEN}").get_data(as_text=True)
    svg = re.search(r'<figure class="activity".*?</figure>', page, re.S).group(0)
    assert "onload" not in svg
    assert "&lt;svg onload=alert(1)&gt;" in page and "<svg onload" not in page


def test_a_client_with_no_activity_gets_an_empty_chart(db, viewer):
    client, _ = viewer
    heartbeats(db, a_past_bucket())
    with db.sessions() as session, session.begin():
        session.execute(delete(ClientActivity))
    page = client.get(f"/clients/{SCREEN}").get_data(as_text=True)
    assert "online 0 min of the last 24 h; 0 heartbeats" in page
    assert '<rect class="bar"' not in page


def test_durations_read_in_hours_and_minutes():
    assert [duration_text(s) for s in (0, 300, 3600, 85_200, 86_400)] == [
        "0 min", "5 min", "1 h", "23 h 40 min", "24 h"]


def test_the_bars_scale_to_a_round_maximum():
    assert [nice_ceiling(n) for n in (1, 3, 10, 11, 26, 120)] == [1, 5, 10, 20, 50, 200]

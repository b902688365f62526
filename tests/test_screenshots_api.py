"""The screenshots API and the deployed server's routes, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.clock import utc_now
from core.config import Settings
from core.screenshot_store import ScreenshotStore
from tests.helpers import close_web_app, make_web_app
from tests.test_screenshots import BLACK, OTHER, SCREEN, dashboard, parse, picture


@pytest.fixture
def shots(tmp_path):
    return tmp_path / "shots"


@pytest.fixture
def app(db, shots):
    app = make_web_app(db.url, SCREENSHOT_DIR=str(shots))
    yield app
    close_web_app(app)


def store_capture(db, shots, payload: bytes, suffix="screenshot", uuid=SCREEN, ago=0):
    at = utc_now() - timedelta(seconds=ago)
    capture = parse(suffix, payload, at, uuid)
    store = ScreenshotStore.from_settings(Settings(SCREENSHOT_DIR=str(shots)))
    with db.sessions() as session, session.begin():
        shot, removal = store.save(session, capture, at)
    removal.unlink()
    return shot


def get(app, path, headers, **extra):
    return app.test_client().get(path, headers={**headers, **extra})


def test_the_latest_picture_is_the_stored_bytes_with_type_etag_and_caching(db, app, auth,
                                                                            shots):
    store_capture(db, shots, picture(), ago=60)
    jpeg = picture(pattern=3)
    store_capture(db, shots, dashboard(jpeg), "dashboard")
    response = get(app, f"/api/clients/{SCREEN}/screenshots/latest", auth["viewer"])
    assert response.status_code == 200
    assert response.data == jpeg and response.mimetype == "image/jpeg"
    assert "max-age" in response.headers["Cache-Control"]
    again = get(app, f"/api/clients/{SCREEN}/screenshots/latest", auth["viewer"],
                **{"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    thumb = get(app, f"/api/clients/{SCREEN}/screenshots/latest?size=thumb", auth["viewer"])
    assert thumb.mimetype == "image/jpeg" and len(thumb.data) < len(jpeg)


def test_the_list_is_paged_newest_first_with_links_that_serve_each_picture(db, app, auth,
                                                                           shots):
    png = picture(fmt="PNG")
    store_capture(db, shots, png, ago=30)
    store_capture(db, shots, dashboard(picture(), kind="event_start"), "dashboard")
    page = get(app, f"/api/clients/{SCREEN}/screenshots?perPage=1", auth["viewer"]).json
    assert page["total"] == 2 and [i["type"] for i in page["items"]] == ["event_start"]
    older = get(app, f"/api/clients/{SCREEN}/screenshots?page=2&perPage=1", auth["viewer"]).json
    item = older["items"][0]
    assert (item["width"], item["height"], item["bytes"]) == (640, 360, len(png))
    served = get(app, item["url"], auth["viewer"])
    assert served.data == png and served.mimetype == "image/png"
    assert get(app, item["thumbUrl"], auth["viewer"]).mimetype == "image/jpeg"


def test_another_screens_capture_and_unknown_ones_are_404(db, app, auth, shots):
    theirs = store_capture(db, shots, picture(), uuid=OTHER)
    store_capture(db, shots, picture())
    for path in (f"/api/clients/{SCREEN}/screenshots/{theirs.id}",
                 f"/api/clients/{SCREEN}/screenshots/999999",
                 f"/api/clients/{SCREEN}/screenshots/{2**70}",
                 "/api/clients/00000000-0000-4000-8000-000000000000/screenshots/latest",
                 "/screenshots/00000000-0000-4000-8000-000000000000"):
        assert get(app, path, auth["viewer"]).status_code == 404, path
    assert get(app, f"/api/clients/{SCREEN}/screenshots/latest?size=huge",
               auth["viewer"]).status_code == 422


def test_the_deployed_servers_routes_serve_the_latest_and_the_active_priority(db, app, auth,
                                                                              shots):
    start = picture(pattern=1)
    store_capture(db, shots, dashboard(start, kind="event_start"), "dashboard", ago=20)
    latest = picture(pattern=2)
    store_capture(db, shots, latest)
    assert get(app, f"/screenshots/{SCREEN}", auth["viewer"]).data == latest
    assert get(app, f"/screenshots/{SCREEN}/priority", auth["viewer"]).data == start
    stale = make_web_app(db.url, SCREENSHOT_DIR=str(shots), PRIORITY_SCREENSHOT_TTL_SECONDS=10)
    try:
        assert get(stale, f"/screenshots/{SCREEN}/priority", auth["viewer"]).data == latest
    finally:
        close_web_app(stale)


def test_screenshots_need_a_sign_in_and_the_configured_role(db, app, auth, shots):
    store_capture(db, shots, picture())
    client = app.test_client()
    for path in (f"/screenshots/{SCREEN}", f"/screenshots/{SCREEN}/priority",
                 f"/api/clients/{SCREEN}/screenshots/latest"):
        assert client.get(path).status_code == 401, path
    strict = make_web_app(db.url, SCREENSHOT_DIR=str(shots), SCREENSHOT_MIN_ROLE="operator")
    try:
        assert get(strict, f"/screenshots/{SCREEN}", auth["viewer"]).status_code == 403
        assert get(strict, f"/screenshots/{SCREEN}", auth["operator"]).status_code == 200
    finally:
        close_web_app(strict)


def test_the_monitoring_overview_says_which_screens_have_an_active_priority_capture(
        db, app, auth, shots):
    store_capture(db, shots, dashboard(picture(), kind="event_stop"), "dashboard", ago=5)
    store_capture(db, shots, BLACK)
    store_capture(db, shots, picture(), uuid=OTHER)
    overview = get(app, "/api/monitoring/overview", auth["viewer"]).json
    figures = {c["uuid"]: c for c in overview["clients"]}
    assert figures[SCREEN]["latestScreenshotType"] == "periodic"
    assert figures[SCREEN]["priorityScreenshotType"] == "event_stop"
    assert figures[SCREEN]["hasActivePriorityScreenshot"] is True
    assert figures[OTHER]["priorityScreenshotType"] is None
    assert figures[OTHER]["hasActivePriorityScreenshot"] is False
    assert overview["summary"] == {"activePriorityScreenshots": 1}


def test_a_relative_screenshot_dir_is_read_where_the_listener_wrote_it(db, auth, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    store_capture(db, "shots", picture())  # as the listener, from the same working folder
    relative = make_web_app(db.url, SCREENSHOT_DIR="shots")
    try:
        response = get(relative, f"/api/clients/{SCREEN}/screenshots/latest", auth["viewer"])
        assert response.status_code == 200 and response.data == picture()
    finally:
        close_web_app(relative)

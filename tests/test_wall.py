"""The screenshot wall and the client page's Screen section, on both databases: each screen's
latest thumbnail with its name, status and age, stale captures dimmed, the fleet filters and
paging, one query for the captures of a page, SCREENSHOT_MIN_ROLE respected, and device text
escaped."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from core.clock import utc_now
from core.groups import assign_group, create_group
from core.models import Client
from server.web import WALL_PER_PAGE
from tests.helpers import close_web_app, make_web_app
from tests.test_screenshots import SCREEN, dashboard, picture
from tests.test_screenshots_api import store_capture

HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture
def shots(tmp_path):
    return tmp_path / "shots"


def web_app(db, shots, **settings):
    return make_web_app(db.url, SCREENSHOT_DIR=str(shots), **settings)


@pytest.fixture
def app(db, shots):
    app = web_app(db, shots)
    yield app
    close_web_app(app)


def screen_uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def add_screens(db, count: int, *, seen_ago: float = 5, first: int = 1) -> list[str]:
    now = utc_now()
    uuids = [screen_uuid(n) for n in range(first, first + count)]
    with db.sessions() as session, session.begin():
        session.add_all(Client(uuid=u, hostname=f"hall-{n:03d}", first_seen_at=now,
                               last_seen_at=now - timedelta(seconds=seen_ago))
                        for n, u in enumerate(uuids, start=first))
    return uuids


def page(app, path, headers):
    response = app.test_client().get(path, headers=headers)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def tiles(html: str) -> dict[str, str]:
    """Each tile's text by the screen's uuid."""
    return dict(re.findall(r'<li class="tile [^"]*" data-client="([^"]+)">(.*?)</li>', html,
                           re.S))


def test_each_screen_shows_its_latest_thumbnail_name_status_and_age(db, app, auth, shots):
    fresh, quiet, never = add_screens(db, 3)
    store_capture(db, shots, picture(), uuid=fresh, ago=120)
    newest = store_capture(db, shots, picture(pattern=2), uuid=fresh, ago=30)
    store_capture(db, shots, picture(), uuid=quiet, ago=14 * 60)
    html = page(app, "/wall", auth["viewer"])
    shown = tiles(html)
    assert set(shown) == {fresh, quiet, never}
    assert f"/screenshots/{newest.id}?size=thumb" in shown[fresh]
    assert "hall-001" in shown[fresh] and "alive" in shown[fresh] and "30 s ago" in shown[fresh]
    assert 'class="tile fresh"' in html.split(f'data-client="{fresh}"')[0][-40:]
    assert "no screenshot for 14 min" in shown[quiet]
    assert 'class="tile dim"' in html.split(f'data-client="{quiet}"')[0][-40:]
    assert "no screenshot yet" in shown[never] and "<img" not in shown[never]
    assert 'loading="lazy"' in shown[fresh]
    thumb = app.test_client().get(re.search(r'src="([^"]+)"', shown[fresh])[1],
                                  headers=auth["viewer"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"


def test_an_event_capture_says_what_it_was(db, app, auth, shots):
    store_capture(db, shots, dashboard(picture(), kind="event_start"), "dashboard")
    assert "event start" in tiles(page(app, "/wall", auth["viewer"]))[SCREEN]


def test_filters_by_status_group_and_search(db, app, auth, shots):
    alive = add_screens(db, 2)
    [down] = add_screens(db, 1, seen_ago=3600, first=3)
    with db.sessions() as session, session.begin():
        group = create_group(session, utc_now(), name="Building A", description=None,
                             supported_actions=None, actor="test")
        assign_group(session, utc_now(), alive[0], group.id, "test")
        group_id = group.id
    assert set(tiles(page(app, "/wall?status=down", auth["viewer"]))) == {down}
    assert set(tiles(page(app, f"/wall?groupId={group_id}", auth["viewer"]))) == {alive[0]}
    assert set(tiles(page(app, "/wall?search=hall-002", auth["viewer"]))) == {alive[1]}
    html = page(app, "/wall?status=down", auth["viewer"])
    assert '<option value="down" selected>' in html  # the same form as the fleet page
    assert "Building A" in html


def test_a_page_holds_sixty_screens_and_reads_their_captures_in_one_query(db, app, auth, shots):
    uuids = add_screens(db, WALL_PER_PAGE + 3)
    for uuid in uuids[:5]:
        store_capture(db, shots, picture(), uuid=uuid)
    statements = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        html = page(app, "/wall", auth["viewer"])
    finally:
        event.remove(Engine, "before_cursor_execute", note)
    assert len(tiles(html)) == WALL_PER_PAGE
    assert f"{WALL_PER_PAGE + 3} screens, page 1 of 2" in html
    assert sum("FROM screenshots" in s for s in statements) == 1
    assert len(tiles(page(app, "/wall?page=2", auth["viewer"]))) == 3


def test_device_text_is_escaped(db, app, auth, shots):
    [uuid] = add_screens(db, 1)
    with db.sessions() as session, session.begin():
        session.get(Client, uuid).hostname = HOSTILE
    store_capture(db, shots, picture(), uuid=uuid)
    html = page(app, "/wall", auth["viewer"])
    assert HOSTILE not in html and "&lt;img src=x" in html


def test_anonymous_is_sent_to_sign_in(app):
    response = app.test_client().get("/wall")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_screenshot_min_role_hides_the_wall_and_the_pictures(db, shots, auth):
    [uuid] = add_screens(db, 1)
    store_capture(db, shots, picture(), uuid=uuid)
    app = web_app(db, shots, SCREENSHOT_MIN_ROLE="operator")
    try:
        client = app.test_client()
        assert client.get("/wall", headers=auth["viewer"]).status_code == 403
        home = page(app, "/", auth["viewer"])
        assert 'href="/wall"' not in home
        detail = page(app, f"/clients/{uuid}", auth["viewer"])
        assert "higher role" in detail and "/screenshots/" not in detail
        assert 'href="/wall"' in page(app, "/", auth["operator"])
        assert uuid in tiles(page(app, "/wall", auth["operator"]))
    finally:
        close_web_app(app)


# The client page ------------------------------------------------------------------------


def test_the_client_page_shows_latest_priority_and_history(db, app, auth, shots):
    start = store_capture(db, shots, dashboard(picture(), kind="event_start"), "dashboard",
                          ago=60)
    for n in range(3):
        last = store_capture(db, shots, picture(pattern=n + 1), ago=30 - n)
    html = page(app, f"/clients/{SCREEN}", auth["viewer"])
    section = html.split('<section class="screen"')[1].split("</section>")[0]
    assert f'src="/api/clients/{SCREEN}/screenshots/{last.id}"' in section
    assert "<b>Latest</b>: periodic" in section
    assert "<b>Priority capture</b>: event start, 60 s ago" in section
    assert f"/screenshots/{start.id}" in section
    history = section.split('<ol class="history"')[1]
    assert history.count("<li>") == 4 and history.count("size=thumb") == 4


def test_no_priority_block_once_it_expires_or_is_the_latest(db, shots, auth):
    store_capture(db, shots, dashboard(picture(), kind="event_stop"), "dashboard", ago=20)
    app = web_app(db, shots, PRIORITY_SCREENSHOT_TTL_SECONDS="10")
    try:
        section = page(app, f"/clients/{SCREEN}", auth["viewer"]).split(
            '<section class="screen"')[1].split("</section>")[0]
    finally:
        close_web_app(app)
    assert "Priority capture" not in section and "<b>Latest</b>: event stop" in section


def test_a_client_without_screenshots_says_so(db, app, auth):
    [uuid] = add_screens(db, 1)
    assert "No screenshot yet." in page(app, f"/clients/{uuid}", auth["viewer"])

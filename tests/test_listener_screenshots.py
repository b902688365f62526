"""The listener's screenshot path against a real broker: what each kind of screen sends is
stored, and what is not a picture is refused, counted and not stored."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from core.models import Client, IngestRejection, Screenshot
from listener.service import build_screenshot_listener
from tests.brokers import broker_with_devices
from tests.conftest import make_settings
from tests.helpers import wait_until
from tests.test_screenshots import dashboard, picture

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """Our own: the screens leave retained messages other tests should never see."""
    with broker_with_devices(tmp_path_factory.mktemp("screenshot-broker"), 0) as (own, _):
        yield own


@pytest.fixture
def settings(broker, db, tmp_path):
    return make_settings(broker, db.url, SCREENSHOT_DIR=str(tmp_path / "shots"))


@pytest.fixture
def screenshot_listener(settings):
    listener = build_screenshot_listener(settings, client_id=f"shots-{uuid.uuid4().hex[:6]}")
    thread = threading.Thread(target=listener.run, name="screenshots", daemon=True)
    thread.start()
    wait_until(listener.subscribed.is_set, timeout=10, message="subscribed")
    yield listener
    listener.stop()
    thread.join(timeout=40)


def stored(db) -> list[Screenshot]:
    with db.sessions() as session:
        return list(session.scalars(select(Screenshot).order_by(Screenshot.id)))


@pytest.mark.parametrize("source", ["screenshot", "dashboard"])  # reference; deployed clients
def test_a_screens_capture_is_stored_as_sent(db, broker, settings, screenshot_listener,
                                             publish_as, source):
    [screen] = broker.add_devices(1)
    jpeg = picture(size=(1280, 720))
    payload = jpeg if source == "screenshot" else dashboard(jpeg, uuid=screen.username)
    publish_as(screen).publish(f"infoscreen/{screen.username}/{source}", payload)
    wait_until(lambda: stored(db), timeout=10, message="capture stored")
    [shot] = stored(db)
    assert (shot.client_uuid, shot.source, shot.width, shot.height) == (
        screen.username, source, 1280, 720)
    assert (Path(settings.screenshot_dir) / shot.file).read_bytes() == jpeg
    with db.sessions() as session:
        client = session.get(Client, screen.username)
    if source == "dashboard":  # the dashboard's runtime blocks
        assert (client.hostname, client.process_status) == ("hall-1", "running")


@pytest.mark.parametrize("payload", [b"hello", b'{"image": "bm90IGFuIGltYWdl"}'])
def test_what_is_not_a_picture_is_counted_and_not_stored(db, broker, screenshot_listener,
                                                         publish_as, payload):
    [device] = broker.add_devices(1)
    publish_as(device).publish(f"infoscreen/{device.username}/screenshot", payload)

    def counted():
        with db.sessions() as session:
            row = session.get(IngestRejection, "invalid_image")
            return row is not None and row.count == 1

    wait_until(counted, timeout=10, message="invalid_image counted")
    assert stored(db) == []

"""The screenshot wall in Debian's Chromium: simulated screens of both profiles send their
screenshots through a real broker, the listener stores them, and the wall shows each screen's
picture. A screenshot of the wall is kept in tests/artifacts/wall.png."""

from __future__ import annotations

import threading
import uuid as uuidlib

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from core.clock import utc_now
from core.models import Screenshot
from core.staff import add_user
from server import create_app
from simulator.options import DeviceOptions
from tests.brokers import broker_with_devices
from tests.conftest import RunningListener, make_settings
from tests.helpers import free_port, wait_until
from tests.test_browser import ARTIFACTS, PASSWORD, browser, sign_in  # noqa: F401 (fixture)
from tests.test_simulator_screenshots import fleet_running, screenshots_listened

pytestmark = [pytest.mark.broker, pytest.mark.slow]
SCREENS = 4


def test_the_wall_shows_every_screens_picture(db, tmp_path, browser):  # noqa: F811
    options = DeviceOptions(screenshot_interval=2.0, screenshot_size=(640, 360),
                            heartbeat_interval=5, crash_rate=0, service_failed_rate=0, seed=5,
                            profile_mix=(("reference", 1), ("infoscreen-2025", 1)))

    def screens_with_pictures() -> int:
        with db.sessions() as session:
            return session.scalar(select(func.count(func.distinct(Screenshot.client_uuid))))

    with broker_with_devices(tmp_path / "broker", SCREENS) as (broker, devices):
        settings = make_settings(broker, db.url, SECRET_KEY="k" * 40,
                                 SCREENSHOT_DIR=str(tmp_path / "shots"))
        with db.sessions() as session, session.begin():
            add_user(session, "victor", "viewer", PASSWORD, now=utc_now(), actor="test")
        server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        listener = RunningListener(settings, f"wall-{uuidlib.uuid4().hex[:6]}")
        try:
            with screenshots_listened(settings), fleet_running(broker, devices, options):
                wait_until(lambda: screens_with_pictures() == SCREENS, timeout=30,
                           message="every screen's screenshot stored")
                base = f"http://127.0.0.1:{server.server_port}"
                page, dialogs = sign_in(browser, base, "victor")
                page.set_viewport_size({"width": 1400, "height": 900})
                page.click("text=Wall")
                page.wait_for_url(f"{base}/wall")
                tiles = page.locator("li.tile")
                assert tiles.count() == SCREENS
                # Each picture loaded (lazy images in view load at once), none dimmed.
                page.wait_for_function(
                    "() => [...document.querySelectorAll('li.tile img')]"
                    ".every(img => img.complete && img.naturalWidth > 0)"
                    f" && document.querySelectorAll('li.tile img').length === {SCREENS}",
                    timeout=10_000)
                assert page.locator("li.tile.dim").count() == 0
                names = tiles.locator(".name").all_inner_texts()
                assert all(name.startswith("sim-screen-") for name in names), names
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "wall.png"), full_page=True)
                assert dialogs == []
        finally:
            listener.stop()
            server.shutdown()

"""Simulated screens send screenshots the backend accepts: the deployed profile its dashboard
(schema v2, the capture's type and runtime blocks), the reference profile a raw JPEG on the
legacy topic; periodically, as an event stops and the next starts, and black in an episode.
Then the command line, and a small fleet on a real broker whose captures the listener stores.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.config import Settings
from core.models import Screenshot
from core.screenshots import Capture, parse_screenshot
from listener.service import build_screenshot_listener
from simulator import cli, screen
from simulator.device import SimulatedDevice
from simulator.fleet import Fleet
from simulator.options import BLACK_CAPTURES, DeviceOptions
from simulator.payloads import encode, hostname_for
from simulator.profiles import INFOSCREEN_2025, REFERENCE
from tests.brokers import broker_with_devices
from tests.conftest import make_settings
from tests.helpers import wait_until
from tests.test_simulator_commands import FakeLink, ScreenClient
from tests.test_simulator_payloads import (
    NOW,
    PREFIX,
    SCREEN,
    FakeMonotonic,
    PinnedClock,
    Sent,
    connect,
)

SMALL = (320, 180)  # pictures stay cheap in tests


class CaptureClient(ScreenClient):
    """Keeps a screenshot's payload as bytes: the legacy topic's is a JPEG, not JSON."""

    def publish(self, topic: str, payload: Any = None, qos: int = 0, retain: bool = False):
        if not topic.endswith(f"/{screen.LEGACY}"):
            return super().publish(topic, payload, qos, retain)
        self.sent.append(Sent(topic, payload, qos, retain))
        return None

    def captures(self) -> list[Capture]:
        """Every screenshot sent, parsed as the listener parses it; a refusal fails the test."""
        parsed = []
        for sent in self.sent:
            if sent.topic.rsplit("/", 1)[1] not in (screen.DASHBOARD, screen.LEGACY):
                continue
            raw = sent.payload if isinstance(sent.payload, bytes) else encode(sent.payload)
            capture = parse_screenshot(sent.topic, raw, NOW)
            assert isinstance(capture, Capture), capture
            assert sent.qos == 1 and not sent.retain
            parsed.append(capture)
        return parsed


def device(profile=INFOSCREEN_2025, **options: Any) -> tuple[SimulatedDevice, CaptureClient]:
    options = {"screenshot_interval": 60.0, "screenshot_size": SMALL, "crash_rate": 0.0,
               "service_failed_rate": 0.0, "seed": 1} | options
    client = CaptureClient(FakeMonotonic())
    screen_ = SimulatedDevice(SCREEN, client, index=3, prefix=PREFIX,
                              options=DeviceOptions(**options), timers=None, clock=PinnedClock(),
                              profile=profile)  # fmt: skip
    screen_.start(FakeLink(client))
    client.connected = True
    connect(screen_, client)
    return screen_, client


# The pictures ---------------------------------------------------------------------------


def test_a_screenshot_shows_the_event_and_changes_with_time():
    event = screen.event_for(0, 0)
    first = screen.render_screenshot("hall-1", NOW, event, size=SMALL)
    later = screen.render_screenshot("hall-1", NOW + timedelta(seconds=1), event, size=SMALL)
    assert first[:2] == b"\xff\xd8" and first != later  # a JPEG, with the time on it
    parsed = parse_screenshot(f"{PREFIX}/{SCREEN}/screenshot", first, NOW)
    assert (parsed.picture.width, parsed.picture.height, parsed.picture.black) == (*SMALL, False)
    desktop = screen.render_screenshot("hall-1", NOW, None, size=SMALL)  # no player running
    assert not parse_screenshot(f"{PREFIX}/{SCREEN}/screenshot", desktop, NOW).picture.black


def test_a_full_size_screenshot_is_about_the_size_of_a_real_one():
    jpeg = screen.render_screenshot("hall-1", NOW, screen.event_for(5, 0))
    assert 60_000 <= len(jpeg) <= 250_000


def test_a_black_screenshot_is_seen_as_black():
    black = screen.render_screenshot("hall-1", NOW, screen.event_for(0, 0), black=True, size=SMALL)
    assert parse_screenshot(f"{PREFIX}/{SCREEN}/screenshot", black, NOW).picture.black


def test_neighbours_show_different_events_and_the_playlist_wraps():
    assert screen.event_for(0, 0) != screen.event_for(1, 0)
    assert screen.event_for(0, 1) == screen.event_for(1, 0)
    assert screen.event_for(2, len(screen.PLAYLIST)) == screen.event_for(2, 0)


# What each profile sends ----------------------------------------------------------------


def test_the_deployed_profile_sends_its_dashboard_with_the_runtime_blocks():
    screen_, client = device()
    screen_.send_screenshot()
    [capture] = client.captures()
    [sent] = client.to(screen.DASHBOARD)
    assert (capture.source, capture.type, capture.captured_at) == ("dashboard", "periodic", NOW)
    assert sent.payload["metadata"]["schema_version"] == "2.0"
    system, process = capture.runtime["system_info"], capture.runtime["process_health"]
    assert (system["hostname"], system["uptime"]) == (hostname_for(3), 0.0)
    assert process["event_id"] == screen.event_for(3, 0).event_id
    assert process["process_status"] == "running"


def test_the_reference_profile_sends_a_raw_jpeg_on_the_legacy_topic():
    screen_, client = device(profile=REFERENCE)
    screen_.send_screenshot()
    [capture] = client.captures()
    assert (capture.source, capture.type) == ("screenshot", "periodic")
    [sent] = [s for s in client.sent if s.topic.endswith("/screenshot")]
    assert sent.payload[:2] == b"\xff\xd8"


def test_an_event_change_sends_a_stop_then_a_start_capture_and_moves_the_health():
    screen_, client = device()
    before = screen_._state(NOW).event
    screen_.change_event()
    stop, start = client.captures()
    assert (stop.type, start.type) == ("event_stop", "event_start")
    assert stop.runtime["process_health"]["event_id"] == before.event_id
    after = screen.event_for(3, 1)
    assert start.runtime["process_health"]["event_id"] == after.event_id
    screen_.send_health()
    [health] = client.to("health")
    assert health.payload["expected_state"]["event_id"] == after.event_id


def test_a_crashed_player_shows_a_desktop_and_says_so():
    screen_, client = device()
    screen_.process_status = "crashed"
    screen_.send_screenshot()
    [capture] = client.captures()
    assert capture.runtime["process_health"]["process_status"] == "crashed"
    assert not capture.picture.black


def test_a_black_episode_lasts_a_few_captures_then_content_returns():
    screen_, client = device(black_screen_rate=1.0)
    screen_.send_screenshot()  # starts the episode
    assert client.captures()[-1].picture.black
    length = screen_._black_left
    assert BLACK_CAPTURES[0] <= length <= BLACK_CAPTURES[1]
    for _ in range(length):
        screen_.send_screenshot()
    assert [c.picture.black for c in client.captures()] == [True] * length + [False]


def test_no_screenshots_when_off_or_not_connected():
    screen_, client = device(screenshot_interval=0)
    screen_.send_screenshot()
    screen_.change_event()
    assert client.captures() == []
    assert [w.name for w in screen_.extra_work()] == ["health report", "tv power", "event change"]
    screen_, client = device()
    client.connected = False
    screen_._online = False
    screen_.send_screenshot()
    assert client.captures() == []
    assert "screenshot" in [w.name for w in screen_.extra_work()]


@pytest.mark.parametrize("bad", [{"screenshot_interval": -1}, {"event_seconds": 0},
                                 {"black_screen_rate": 1.5}, {"screenshot_size": (8, 8)}])
def test_options_refuse_what_makes_no_sense(bad):
    with pytest.raises(ValueError):
        DeviceOptions(**bad)


# The command line -----------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_command_line_defaults_and_choices():
    args = parse()
    assert (args.screenshot_interval, args.black_screen_rate, args.screenshot_size) == (
        60.0, 0.0, (1280, 720))
    args = parse("--screenshot-interval", "0", "--event-seconds", "45", "--screenshot-size",
                 "640x360", "--black-screen-rate", "0.1")
    assert (args.screenshot_interval, args.event_seconds, args.screenshot_size,
            args.black_screen_rate) == (0.0, 45.0, (640, 360), 0.1)


@pytest.mark.parametrize("argv, said", [
    (("--screenshot-size", "wide"), "WIDTHxHEIGHT"),
    (("--screenshot-size", "8x8"), "16 to 7680"),
    (("--screenshot-interval", "-5"), "0 or more"),
    (("--black-screen-rate", "2"), "probability"),
])
def test_the_command_line_names_a_bad_value(argv, said, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert said in capsys.readouterr().err


# A fleet on a real broker ---------------------------------------------------------------


@contextlib.contextmanager
def screenshots_listened(settings: Settings) -> Iterator[None]:
    """The listener's screenshot path on a thread, subscribed."""
    listener = build_screenshot_listener(settings, client_id=f"shots-{uuid.uuid4().hex[:6]}")
    thread = threading.Thread(target=listener.run, name="screenshots", daemon=True)
    thread.start()
    wait_until(listener.subscribed.is_set, timeout=10, message="subscribed")
    try:
        yield
    finally:
        listener.stop()
        thread.join(timeout=30)


@contextlib.contextmanager
def fleet_running(broker, devices, options: DeviceOptions) -> Iterator[Fleet]:
    """A simulated fleet of the broker's device accounts, on a thread, logged in as devices."""
    fleet = Fleet.create(PREFIX, [(d.username, d.password) for d in devices], options)
    fleet.start(Settings.model_validate({"MQTT_HOST": broker.host,
                                         "MQTT_PORT": broker.device_port,
                                         "BROKER_DIR": str(broker.directory)}))
    stop = threading.Event()
    runner = threading.Thread(target=fleet.run, args=(stop,), name="fleet", daemon=True)
    runner.start()
    try:
        yield fleet
    finally:
        stop.set()
        runner.join(timeout=10)


@pytest.mark.broker
def test_a_fleet_of_both_profiles_has_its_screenshots_stored(db, tmp_path):
    options = DeviceOptions(screenshot_interval=1.0, screenshot_size=SMALL, event_seconds=2,
                            crash_rate=0, service_failed_rate=0, seed=3,
                            profile_mix=(("reference", 1), ("infoscreen-2025", 1)))

    def kinds() -> set[tuple[str, str]]:
        with db.sessions() as session:
            return set(session.execute(
                select(Screenshot.source, Screenshot.type)
                .group_by(Screenshot.source, Screenshot.type)))

    with broker_with_devices(tmp_path / "broker", 2) as (broker, devices):
        settings = make_settings(broker, db.url, SCREENSHOT_DIR=str(tmp_path / "shots"))
        with screenshots_listened(settings), fleet_running(broker, devices, options):
            wait_until(lambda: kinds() >= {
                ("screenshot", "periodic"), ("dashboard", "periodic"),
                ("dashboard", "event_start"), ("dashboard", "event_stop")},
                timeout=30, message="both profiles' captures stored")
    with db.sessions() as session:
        owners = set(session.scalars(select(Screenshot.client_uuid)))
    assert owners == {d.username for d in devices}

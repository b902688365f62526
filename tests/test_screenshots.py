"""Screenshots: parsing both topics, checking the picture, storing files and rows together,
retention, and what a capture says about the screen (black, frozen). Both databases."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from sqlalchemy import func, select

from core.contract import Rejection
from core.models import Client, Event, Screenshot
from core.screenshot_store import Retention, ScreenshotStore
from core.screenshots import Capture, parse_screenshot

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SCREEN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER = "9b2c1f3e-0d4a-4c5b-8e7f-1a2b3c4d5e6f"


def picture(color=(30, 120, 200), size=(640, 360), fmt="JPEG", pattern=0) -> bytes:
    image = Image.new("RGB", size, color)
    if pattern:  # different content, same colour
        image.paste((255, 255, 255), (pattern * 20, 20, pattern * 20 + 200, 200))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


BLACK = picture((0, 0, 0))


def dashboard(data: bytes, *, kind="periodic", uuid=SCREEN, **blocks) -> bytes:
    document = {
        "message": {"client_id": uuid, "status": "alive"},
        "content": {"screenshot": {"filename": "screenshot_20261130_120000.jpg",
                                   "data": base64.b64encode(data).decode(),
                                   "timestamp": "2026-11-30T11:59:58Z", "size": len(data)}},
        "runtime": {"system_info": {"hostname": "hall-1", "ip": "10.0.0.8", "uptime": 3600.5},
                    "process_health": {"event_id": 42, "event_type": "presentation",
                                       "current_process": "chromium", "process_pid": 1187,
                                       "process_status": "running", "restart_count": 0}},
        "metadata": {"schema_version": "2.0", "producer": "simclient",
                     "published_at": "2026-11-30T11:59:59Z",
                     "capture": {"type": kind, "captured_at": "2026-11-30T11:59:57Z",
                                 "age_s": 2.1, "triggered": kind != "periodic",
                                 "send_immediately": kind != "periodic"}},
    }
    document.update(blocks)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def parse(suffix: str, payload: bytes, at: datetime = T0, uuid: str = SCREEN, **limits):
    return parse_screenshot(f"infoscreen/{uuid}/{suffix}", payload, at, **limits)


# Parsing ----------------------------------------------------------------------------------


def test_a_dashboard_gives_its_picture_capture_and_runtime():
    jpeg = picture()
    capture = parse("dashboard", dashboard(jpeg, kind="event_start"))
    assert isinstance(capture, Capture), capture
    assert (capture.type, capture.priority, capture.source) == ("event_start", True, "dashboard")
    assert capture.captured_at == datetime(2026, 11, 30, 11, 59, 57, tzinfo=UTC)
    assert capture.picture.data == jpeg and capture.picture.format == "jpeg"
    assert (capture.picture.width, capture.picture.height) == (640, 360)
    assert capture.runtime["system_info"]["hostname"] == "hall-1"
    assert Image.open(io.BytesIO(capture.picture.thumbnail)).size == (320, 180)


def test_every_dashboard_block_but_the_picture_is_optional():
    bare = json.dumps({"content": {"screenshot": {"data": base64.b64encode(picture()).decode()}}})
    capture = parse("dashboard", bare.encode())
    assert isinstance(capture, Capture), capture
    assert (capture.type, capture.captured_at, capture.runtime) == ("periodic", T0, None)


@pytest.mark.parametrize("payload", [
    picture(), picture(fmt="PNG"),
    json.dumps({"image": base64.b64encode(picture()).decode()}).encode(),
])
def test_the_legacy_topic_takes_raw_jpeg_or_png_or_base64_json(payload):
    capture = parse("screenshot", payload)
    assert isinstance(capture, Capture), capture
    assert capture.source == "screenshot" and capture.type == "periodic"


def test_a_black_picture_is_seen_and_a_dark_one_with_content_is_not():
    assert parse("screenshot", BLACK).picture.black
    assert not parse("screenshot", picture((0, 0, 0), pattern=3)).picture.black


def bomb() -> bytes:
    out = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(out, "PNG")  # 900 million pixels, 100 KB
    return out.getvalue()


@pytest.mark.parametrize(("reason", "suffix", "payload", "limits"), [
    ("invalid_image", "screenshot", b"hello", {}),
    ("invalid_image", "screenshot", picture()[:400], {}),  # truncated
    ("invalid_image", "screenshot", b'{"image": "not base64!"}', {}),
    ("invalid_image", "screenshot", b'{"picture": "x"}', {}),
    ("invalid_image", "dashboard", b'{"content": {}}', {}),
    ("invalid_image", "dashboard", dashboard(b"GIF89a not a jpeg"), {}),
    ("image_too_large", "screenshot", picture(), {"max_bytes": 1000}),
    ("image_too_large", "dashboard", dashboard(picture()), {"max_bytes": 1000}),
    ("image_too_large", "screenshot", picture(size=(2000, 2000)), {"max_pixels": 1_000_000}),
    ("image_too_large", "screenshot", bomb(), {}),
    ("invalid_json", "dashboard", b"{nope", {}),
    ("not_an_object", "dashboard", b"[1, 2]", {}),
    ("wrong_type", "dashboard", b'{"runtime": {"system_info": {"uptime": "long"}}}', {}),
    ("invalid_value", "dashboard", dashboard(picture(), kind="sometimes"), {}),
    ("uuid_mismatch", "dashboard", dashboard(picture(), uuid=OTHER), {}),
])
def test_it_refuses_what_is_not_a_picture_naming_why(reason, suffix, payload, limits):
    result = parse(suffix, payload, **limits)
    assert isinstance(result, Rejection) and result.reason == reason, result


def test_the_same_content_has_the_same_fingerprint_and_new_content_another():
    first, again = parse("screenshot", picture()), parse("screenshot", picture())
    other = parse("screenshot", picture(pattern=5))
    assert first.picture.fingerprint == again.picture.fingerprint
    assert first.picture.fingerprint != other.picture.fingerprint


# Storing ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return ScreenshotStore(tmp_path / "shots", Retention(
        history=20, priority_ttl=timedelta(minutes=10), budget_bytes=10**9, frozen_after=None))


def save(db, store, payload: bytes, at: datetime, suffix: str = "screenshot",
         uuid: str = SCREEN) -> Screenshot:
    capture = parse(suffix, payload, at, uuid)
    assert isinstance(capture, Capture), capture
    with db.sessions() as session, session.begin():
        shot, removal = store.save(session, capture, at)
    removal.unlink()
    return shot


def rows(db) -> list[Screenshot]:
    with db.sessions() as session:
        return list(session.scalars(select(Screenshot).order_by(Screenshot.id)))


def files(store) -> set[str]:
    return {p.relative_to(store.directory).as_posix() for p in store.directory.glob("*/*")}


def expected_files(store, shots) -> set[str]:
    return {p.relative_to(store.directory).as_posix()
            for s in shots for p in (store.path(s), store.path(s, thumb=True))}


def events(db) -> list[str]:
    with db.sessions() as session:
        return list(session.scalars(select(Event.type).order_by(Event.id)))


def test_a_capture_is_a_row_and_two_files_that_hold_the_bytes_unchanged(db, store):
    jpeg = picture()
    shot = save(db, store, dashboard(jpeg), T0, "dashboard")
    assert store.path(shot).read_bytes() == jpeg
    assert store.path(shot).name.endswith(".jpeg") and SCREEN in store.path(shot).as_posix()
    [row] = rows(db)
    assert (row.bytes, row.width, row.height, row.type, row.received_at) == (
        len(jpeg), 640, 360, "periodic", T0)
    assert files(store) == expected_files(store, [row])
    with db.sessions() as session:
        client = session.get(Client, SCREEN)
    assert (client.hostname, client.ip, client.process_status) == ("hall-1", "10.0.0.8",
                                                                   "running")
    assert client.runtime["process_health"]["event_id"] == 42
    assert events(db) == ["client_registered"]


def test_the_history_keeps_twenty_and_the_priority_capture_for_its_time(db, store):
    save(db, store, dashboard(picture(), kind="event_start"), T0, "dashboard")
    for i in range(1, 25):
        save(db, store, picture(pattern=i % 7), T0 + timedelta(seconds=i))
    kept = rows(db)
    assert len(kept) == 21 and kept[0].type == "event_start"  # 20 and the priority one
    assert files(store) == expected_files(store, kept)
    save(db, store, picture(), T0 + timedelta(minutes=11))  # the priority time is over
    kept = rows(db)
    assert len(kept) == 20 and all(r.type == "periodic" for r in kept)
    assert files(store) == expected_files(store, kept)


def test_the_disk_budget_removes_the_oldest_and_keeps_each_screens_newest(db, store):
    for i in range(6):
        save(db, store, picture(pattern=i), T0 + timedelta(seconds=i))
    save(db, store, picture(), T0 + timedelta(seconds=9), uuid=OTHER)
    one = rows(db)[0].bytes + rows(db)[0].thumb_bytes
    tight = ScreenshotStore(store.directory, Retention(20, timedelta(0), 3 * one, None))
    with db.sessions() as session, session.begin():
        removal = tight.prune_budget(session)
    removal.unlink()
    kept = rows(db)
    assert len(kept) <= 3 and {r.client_uuid for r in kept} == {SCREEN, OTHER}
    assert kept[-1].client_uuid == OTHER
    assert files(store) == expected_files(store, kept)


def test_a_crash_between_file_and_row_leaves_nothing_behind_after_reconciliation(db, store):
    kept = save(db, store, picture(), T0)
    capture = parse("screenshot", picture(pattern=2), T0)
    with pytest.raises(RuntimeError), db.sessions() as session, session.begin():
        store.save(session, capture, T0)  # the files are written ...
        raise RuntimeError("the process dies before the commit")
    assert len(files(store)) == 4 and len(rows(db)) == 1
    for path in store.directory.glob("*/*"):  # ... and are old by the time anyone looks
        os.utime(path, (0, 0))
    store.path(kept).unlink()  # and a row whose file someone deleted ...
    short = save(db, store, picture(pattern=4), T0 + timedelta(seconds=1))
    store.path(short).write_bytes(b"\xff\xd8")  # ... and one cut short by a power cut
    os.utime(store.path(short, thumb=True), (0, 0))
    with db.sessions() as session, session.begin():
        orphans, missing = store.reconcile(session, datetime.now(UTC))
    assert (orphans, missing) == (2, 2)  # the crashed capture's two files; the rows
    assert rows(db) == [] and files(store) == set()


def test_reconciliation_leaves_young_files_alone(db, store):
    capture = parse("screenshot", picture(), T0)
    with pytest.raises(RuntimeError), db.sessions() as session, session.begin():
        store.save(session, capture, T0)
        raise RuntimeError("not committed yet")
    with db.sessions() as session, session.begin():
        assert store.reconcile(session, datetime.now(UTC)) == (0, 0)
    assert len(files(store)) == 2


def test_a_black_screen_is_one_event_per_episode_and_its_end_another(db, store):
    save(db, store, picture(), T0)
    for i in range(1, 4):
        save(db, store, BLACK, T0 + timedelta(minutes=i))
    save(db, store, picture(pattern=1), T0 + timedelta(minutes=5))
    save(db, store, BLACK, T0 + timedelta(minutes=6))
    assert events(db) == ["client_registered", "screen_black", "screen_recovered",
                          "screen_black"]


def test_a_frozen_screen_is_reported_once_when_watched(db, store):
    watching = ScreenshotStore(store.directory, Retention(20, timedelta(0), 10**9,
                                                          timedelta(minutes=5)))
    for minute in (0, 2, 4, 6, 8):
        save(db, watching, picture(), T0 + timedelta(minutes=minute))
    save(db, watching, picture(pattern=4), T0 + timedelta(minutes=9))
    assert events(db) == ["client_registered", "screen_frozen", "screen_recovered"]
    save(db, store, picture(), T0 + timedelta(minutes=30))  # not watched: nothing
    assert events(db)[-1] == "screen_recovered"


def test_a_screenshot_is_a_sign_of_life(db, store):
    save(db, store, picture(), T0)
    save(db, store, picture(), T0 + timedelta(seconds=30))
    with db.sessions() as session:
        client = session.get(Client, SCREEN)
        assert (client.first_seen_at, client.last_seen_at) == (T0, T0 + timedelta(seconds=30))
        assert session.scalar(select(func.count()).select_from(Screenshot)) == 2

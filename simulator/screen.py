"""What a simulated screen shows: its events, a screenshot of them, and the payloads that carry
one.

A screen walks a playlist of events (`event_for`), each a presentation or a web page with its
own colours, title and text blocks. `render_screenshot` draws the current event with the
screen's hostname and the time on it and returns a JPEG; what depends only on the event is
drawn once per process and cached, so a capture costs a copy, the live panel, two short texts
and the JPEG encoding (a few ms). A black capture (the HDMI output died) is one cached
all-black JPEG.

`dashboard_payload` is the deployed clients' dashboard (schema v2, the picture in base64);
`legacy_screenshot_payload` the older clients' `screenshot` topic (the raw JPEG, or `{"image":
"<base64>"}`). Everything here is pure, for the backend's tests and benchmarks to import.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

from core.clock import as_utc, iso_z

SIZE = (1280, 720)
QUALITY = 80  # JPEG quality: 60-200 KB at SIZE
# Topic suffixes: the deployed clients' dashboard, the older clients' raw picture.
DASHBOARD = "dashboard"
LEGACY = "screenshot"
# Why a capture was taken (the dashboard's metadata.capture.type).
PERIODIC = "periodic"
EVENT_START = "event_start"
EVENT_STOP = "event_stop"
TRIGGERED = (EVENT_START, EVENT_STOP)
DASHBOARD_SCHEMA_VERSION = "2.0"
PRODUCER = "simclient"
PLAYER_PROCESS = "chromium"

PRESENTATION, WEB = "presentation", "web"
EVENT_TYPES = (PRESENTATION, WEB)
FIRST_EVENT_ID = 4000
PLAYLIST_TITLES = (
    "Welcome to Building C",
    "Cafeteria menu",
    "Room bookings today",
    "Campus news",
    "Safety briefing",
    "Bus departures",
    "Quarterly results",
    "Visitor information",
)
# Background top, background bottom, accent: one per playlist position.
PALETTES = (
    ((18, 52, 110), (70, 24, 96), (255, 176, 32)),
    ((10, 90, 80), (16, 40, 60), (250, 240, 200)),
    ((120, 30, 40), (40, 16, 30), (255, 220, 120)),
    ((30, 30, 36), (70, 80, 96), (90, 200, 250)),
    ((200, 90, 20), (90, 30, 10), (255, 255, 255)),
    ((20, 110, 160), (10, 30, 70), (255, 210, 0)),
    ((50, 110, 40), (20, 50, 30), (240, 240, 240)),
    ((90, 60, 140), (30, 20, 60), (120, 250, 190)),
)
LIVE_SECONDS = 20  # the live panel (a slide's chart, a page's featured tile) changes this often
DESKTOP = ((34, 48, 64), (52, 66, 84))  # no player running: a plain desktop
GRAIN = 10  # amplitude of the noise that makes a picture compress like a real screen


@dataclass(frozen=True)
class Event:
    """What the screen's schedule shows now (the deployed health's expected_state)."""

    event_id: int
    event_type: str
    title: str
    palette: tuple[tuple[int, int, int], ...]


PLAYLIST = tuple(
    Event(FIRST_EVENT_ID + k, EVENT_TYPES[k % len(EVENT_TYPES)], title, PALETTES[k])
    for k, title in enumerate(PLAYLIST_TITLES)
)


def event_for(index: int, number: int) -> Event:
    """The `number`-th event (0: the first after start) of the screen with this fleet index.

    Every screen walks the same playlist from its own place, so neighbours show different
    events and the pictures of a playlist's events are drawn once for the whole fleet.
    """
    return PLAYLIST[(index + number) % len(PLAYLIST)]


@dataclass(frozen=True)
class Screenshot:
    """One capture: why it was taken, when, and the JPEG."""

    kind: str  # PERIODIC, EVENT_START or EVENT_STOP
    captured_at: datetime
    jpeg: bytes


# Payloads ---------------------------------------------------------------------------------


def dashboard_payload(
    client_uuid: str,
    jpeg: bytes,
    *,
    captured_at: datetime,
    hostname: str,
    ip: str,
    uptime_s: float,
    event_id: int | None,
    event_type: str | None,
    process_status: str = "running",
    process_pid: int | None = None,
    restart_count: int = 0,
    capture_type: str = PERIODIC,
    published_at: datetime | None = None,
) -> dict[str, Any]:
    """The deployed clients' dashboard, schema v2; `published_at` defaults to `captured_at`."""
    published_at = captured_at if published_at is None else published_at
    triggered = capture_type in TRIGGERED
    return {
        "message": {"client_id": client_uuid, "status": "alive"},
        "content": {
            "screenshot": {
                "filename": f"screenshot_{as_utc(captured_at):%Y%m%d_%H%M%S}.jpg",
                "data": base64.b64encode(jpeg).decode("ascii"),
                "timestamp": iso_z(captured_at),
                "size": len(jpeg),
            }
        },
        "runtime": {
            "system_info": {"hostname": hostname, "ip": ip, "uptime": round(uptime_s, 1)},
            "process_health": {
                "event_id": event_id,
                "event_type": event_type,
                "current_process": PLAYER_PROCESS,
                "process_pid": process_pid,
                "process_status": process_status,
                "restart_count": restart_count,
            },
        },
        "metadata": {
            "schema_version": DASHBOARD_SCHEMA_VERSION,
            "producer": PRODUCER,
            "published_at": iso_z(published_at),
            "capture": {
                "type": capture_type,
                "captured_at": iso_z(captured_at),
                "age_s": round((published_at - captured_at).total_seconds(), 3),
                "triggered": triggered,
                "send_immediately": triggered,  # an event's capture does not wait its turn
            },
        },
    }


def legacy_screenshot_payload(jpeg: bytes, *, as_json: bool = False) -> bytes:
    """The `screenshot` topic's payload: the raw JPEG, or the JSON form `{"image": base64}`."""
    if not as_json:
        return jpeg
    return json.dumps({"image": base64.b64encode(jpeg).decode("ascii")}).encode()


# Pictures ---------------------------------------------------------------------------------


def render_screenshot(
    hostname: str,
    now: datetime,
    event: Event | None,
    black: bool = False,
    size: tuple[int, int] = SIZE,
    *,
    quality: int = QUALITY,
) -> bytes:
    """A JPEG of the screen at `now`: the event's content (None: no player, a bare desktop)
    with the hostname and the time; `black`: all black, as a dead HDMI output."""
    if black:
        return _black_jpeg(size, quality)
    image = _backdrop(event, size).copy()
    draw = ImageDraw.Draw(image)
    if event is not None:
        _live_panel(draw, _Layout(size), event, now)
    _caption(draw, hostname, now, size)
    return _jpeg(image, quality)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


@functools.lru_cache(maxsize=8)
def _black_jpeg(size: tuple[int, int], quality: int) -> bytes:
    return _jpeg(Image.new("RGB", size), quality)


@functools.lru_cache(maxsize=64)
def _font(pixels: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(pixels, 6))
    except TypeError:  # Pillow 10.0: only the small bitmap font
        return ImageFont.load_default()


class _Layout:
    """Boxes in units of a 1280x720 screen, scaled to the picture's size."""

    def __init__(self, size: tuple[int, int]):
        self.sx, self.sy = size[0] / SIZE[0], size[1] / SIZE[1]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return round(x0 * self.sx), round(y0 * self.sy), round(x1 * self.sx), round(y1 * self.sy)

    def at(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self.sx), round(y * self.sy)

    def font(self, pixels: float) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
        return _font(round(pixels * self.sy))

    def text(self, draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str,
             pixels: float, fill: tuple[int, ...], *, align: str = "left") -> None:  # fmt: skip
        """One line, its left edge, centre or right edge at x and its middle at y. No
        anchors: the bitmap font of an old Pillow has none."""
        font = self.font(pixels)
        x, y = self.at(*at)
        width = draw.textlength(text, font=font)
        x -= round(width / 2 if align == "centre" else width if align == "right" else 0)
        draw.text((x, y - round(pixels * self.sy * 0.6)), text, fill=fill, font=font)


def _gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...],
              seed: int) -> Image.Image:  # fmt: skip
    """A vertical gradient with a fine grain: flat colour compresses unlike a real screen."""
    shade = Image.linear_gradient("L").resize(size)
    image = ImageOps.colorize(shade, top, bottom)
    grain = Image.frombytes("L", size, random.Random(seed).randbytes(size[0] * size[1]))
    grain = grain.point(lambda v: 128 + (v - 128) * GRAIN // 128)
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), offset=-128)


def _photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A blurry stand-in for a photo: a few random colours blown up."""
    rng = random.Random(seed)
    tiny = Image.frombytes("RGB", (8, 5), rng.randbytes(8 * 5 * 3))
    return tiny.resize(size, Image.Resampling.BICUBIC)


@functools.lru_cache(maxsize=2 * len(PLAYLIST) + 2)
def _backdrop(event: Event | None, size: tuple[int, int]) -> Image.Image:
    """Everything of a picture that depends only on the event; never changed after this."""
    if event is None:
        image = _gradient(size, *DESKTOP, seed=0)
        layout = _Layout(size)
        draw = ImageDraw.Draw(image)
        layout.text(draw, (640, 330), "No content: the player is not running", 34,
                    (200, 210, 220), align="centre")
        return image
    top, bottom, accent = event.palette
    image = _gradient(size, top, bottom, seed=event.event_id)
    layout = _Layout(size)
    draw = ImageDraw.Draw(image)
    draw.rectangle(layout.box(0, 0, 1280, 96), fill=tuple(c // 2 for c in top))
    layout.text(draw, (48, 48), event.title, 44, accent)
    layout.text(draw, (1232, 48), f"{event.event_type} #{event.event_id}", 22, (230, 230, 230),
                align="right")
    if event.event_type == PRESENTATION:
        _slide_text(draw, layout, event)
    else:
        _page_cards(draw, layout, event)
    image.paste(_photo(_size(layout.box(0, 0, 400, 225)), event.event_id),
                layout.at(48, 420))  # fmt: skip
    draw.rectangle(layout.box(0, 672, 1280, 720), fill=(12, 12, 16))  # the caption's bar
    return image


def _size(box: tuple[int, int, int, int]) -> tuple[int, int]:
    return max(box[2] - box[0], 1), max(box[3] - box[1], 1)


def _slide_text(draw: ImageDraw.ImageDraw, layout: _Layout, event: Event) -> None:
    for line in range(6):
        y = 140 + line * 44
        draw.ellipse(layout.box(52, y - 7, 66, y + 7), fill=event.palette[2])
        layout.text(draw, (84, y), f"{event.title}: point {line + 1} of the agenda", 26,
                    (245, 245, 245))


def _page_cards(draw: ImageDraw.ImageDraw, layout: _Layout, event: Event) -> None:
    heading, body = layout.font(22), layout.font(16)
    for card in range(4):
        x, y = 48 + card % 2 * 300, 128 + card // 2 * 140
        draw.rounded_rectangle(layout.box(x, y, x + 280, y + 124), radius=10,
                               fill=(246, 246, 248))  # fmt: skip
        draw.text(layout.at(x + 14, y + 12), f"Item {card + 1}", fill=(20, 20, 30), font=heading)
        for line in range(4):
            draw.text(layout.at(x + 14, y + 44 + line * 19),
                      f"{event.event_id}-{card}{line}: 10:{15 * line:02d} room {card + 2}.0{line}",
                      fill=(70, 70, 80), font=body)  # fmt: skip


def _live_panel(draw: ImageDraw.ImageDraw, layout: _Layout, event: Event, now: datetime) -> None:
    """The part that moves: a presentation's chart changes with its slide, a page's featured
    tile with its rotation; so the same event is not the same picture all along."""
    phase = int(now.timestamp() // LIVE_SECONDS)
    accent = event.palette[2]
    draw.rectangle(layout.box(700, 128, 1232, 648), fill=(250, 250, 250))
    if event.event_type == PRESENTATION:
        rng = random.Random(event.event_id * 1_000_003 + phase)
        for bar in range(6):
            height = rng.randint(60, 440)
            x = 740 + bar * 80
            draw.rectangle(layout.box(x, 620 - height, x + 56, 620), fill=accent)
    else:
        shade = tuple((c * (phase % 3 + 1)) // 3 for c in accent)
        draw.rounded_rectangle(layout.box(724, 152, 1208, 624), radius=16, fill=shade)


def _caption(
    draw: ImageDraw.ImageDraw, hostname: str, now: datetime, size: tuple[int, int]
) -> None:
    layout = _Layout(size)
    layout.text(draw, (48, 696), hostname, 24, (240, 240, 240))
    layout.text(draw, (1232, 696), f"{as_utc(now):%Y-%m-%d %H:%M:%S} UTC", 24, (240, 240, 240),
                align="right")

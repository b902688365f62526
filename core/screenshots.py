"""Screenshots: parsing the two topics that carry them, and checking the picture.

`parse_screenshot(topic, payload, ...)` turns a `dashboard` (the deployed clients' schema v2
JSON with a base64 JPEG) or a legacy `screenshot` (raw JPEG/PNG bytes, or `{"image":
"<base64>"}`) into a `Capture` or a `Rejection`; it never raises on bad input. The picture is
opened with Pillow: only a real JPEG or PNG within the pixel limit passes (a decompression
bomb is refused before it is decoded), and what is kept of it is measured here (size, a
thumbnail, whether it is black, a fingerprint to spot a frozen screen).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.contract import (
    CLIENT_ID_RE,
    INVALID_CLIENT_ID,
    INVALID_JSON,
    UNKNOWN_TOPIC,
    UUID_MISMATCH,
    Rejection,
    UTCDatetime,
    classify_error,
    describe_error,
    excerpt,
)

# Rejection reasons of this path, counted with the others.
INVALID_IMAGE = "invalid_image"
IMAGE_TOO_LARGE = "image_too_large"

DASHBOARD = "dashboard"
LEGACY = "screenshot"
SUFFIXES = (DASHBOARD, LEGACY)
CAPTURE_TYPES = ("periodic", "event_start", "event_stop")
PRIORITY_TYPES = frozenset({"event_start", "event_stop"})
FORMATS = {"JPEG": ("jpeg", "image/jpeg"), "PNG": ("png", "image/png")}
CONTENT_TYPES = {ext: mime for ext, mime in FORMATS.values()}
THUMB_SIZE = (320, 180)
# A black screen: the brightest of the thumbnail's pixels (but a few) stays this dark.
BLACK_LUMA = 24
BLACK_SHARE_ALLOWED = 0.01


def screenshot_topics(prefix: str) -> list[str]:
    return [f"{prefix}/+/{suffix}" for suffix in SUFFIXES]


class _Block(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Shot(_Block):
    data: str | None = None
    timestamp: UTCDatetime | None = None


class _Content(_Block):
    screenshot: _Shot | None = None


class _SystemInfo(_Block):
    hostname: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    ip: Annotated[str, Field(max_length=45)] | None = None
    uptime: float | None = None


class _ProcessHealth(_Block):
    event_id: int | str | None = None
    event_type: Annotated[str, Field(max_length=64)] | None = None
    current_process: Annotated[str, Field(max_length=128)] | None = None
    process_pid: int | None = None
    process_status: str | None = None
    restart_count: int | None = None


class _Runtime(_Block):
    system_info: _SystemInfo | None = None
    process_health: _ProcessHealth | None = None


class _CaptureMeta(_Block):
    type: Literal["periodic", "event_start", "event_stop"] | None = None
    captured_at: UTCDatetime | None = None


class _Metadata(_Block):
    capture: _CaptureMeta | None = None


class _Message(_Block):
    client_id: str | None = None


class DashboardPayload(_Block):
    """Schema v2 of the deployed clients. Every block is optional, as the deployed server
    tolerates a missing one; the types of what is there are checked."""

    message: _Message | None = None
    content: _Content | None = None
    runtime: _Runtime | None = None
    metadata: _Metadata | None = None


class LegacyJson(_Block):
    image: str


@dataclass(frozen=True, slots=True)
class Picture:
    """A checked image: its bytes unchanged, and what is kept of it."""

    data: bytes
    format: str  # jpeg, png
    width: int
    height: int
    sha256: str
    thumbnail: bytes  # JPEG, at most THUMB_SIZE
    black: bool
    fingerprint: str  # of a 16x9 grey picture in 16 levels: equal for the same content

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True, slots=True)
class Capture:
    client_uuid: str
    received_at: datetime
    captured_at: datetime
    type: str
    source: str  # dashboard or screenshot
    picture: Picture
    runtime: dict[str, Any] | None = None  # the dashboard's runtime blocks, as sent
    topic: str = ""

    @property
    def priority(self) -> bool:
        return self.type in PRIORITY_TYPES


class ImageRefused(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def inspect_picture(data: bytes, *, max_bytes: int, max_pixels: int) -> Picture:
    """Open and measure an image, or raise ImageRefused naming why."""
    if len(data) > max_bytes:
        raise ImageRefused(IMAGE_TOO_LARGE, f"{len(data)} bytes, limit {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRefused(IMAGE_TOO_LARGE, f"{width}x{height} pixels, "
                                   f"limit {max_pixels}")
            # A JPEG is decoded straight at thumbnail scale (DCT scaling): every byte of it is
            # still read, so truncated or corrupt data fails, at a third of the work.
            image.draft("RGB", THUMB_SIZE)
            image.load()
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused(IMAGE_TOO_LARGE, str(exc)[:200]) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRefused(INVALID_IMAGE, f"not a readable JPEG or PNG: {exc}"[:200]) from None
    fmt, _ = FORMATS[image.format or ""]
    thumb = image.convert("RGB")
    thumb.thumbnail(THUMB_SIZE, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=75)
    grey = thumb.convert("L")
    return Picture(
        data=data, format=fmt, width=width, height=height,
        sha256=hashlib.sha256(data).hexdigest(), thumbnail=out.getvalue(),
        black=_is_black(grey), fingerprint=_fingerprint(grey),
    )


def _is_black(grey: Image.Image) -> bool:
    histogram = grey.histogram()
    bright = sum(histogram[BLACK_LUMA:])
    return bright <= BLACK_SHARE_ALLOWED * sum(histogram)


def _fingerprint(grey: Image.Image) -> str:
    # Coarse on purpose: JPEG noise and a blinking cursor leave it alone, new content not.
    levels = bytes(value // 16 for value in grey.resize((16, 9)).tobytes())
    return hashlib.blake2b(levels, digest_size=16).hexdigest()


def _decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused(INVALID_IMAGE, "the image is not valid base64") from None


def parse_screenshot(
    topic: str,
    payload: bytes,
    received_at: datetime,
    *,
    prefix: str = "infoscreen",
    max_bytes: int = 2_000_000,
    max_pixels: int = 20_000_000,
) -> Capture | Rejection:
    """Parse one screenshot message. Nothing raises; a refusal names its reason."""

    def reject(reason: str, detail: str) -> Rejection:
        # Picture bytes say nothing in a log line; JSON does.
        shown = excerpt(payload, 60) if payload[:1] == b"{" else f"<{len(payload)} bytes>"
        return Rejection(reason, topic[:255], detail[:300], shown)

    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or parts[2] not in SUFFIXES:
        return reject(UNKNOWN_TOPIC, "not a screenshot topic of this contract")
    client_uuid, source = parts[1], parts[2]
    if not CLIENT_ID_RE.match(client_uuid):
        return reject(INVALID_CLIENT_ID, "the topic's client id is not a uuid")
    try:
        if source == DASHBOARD:
            return _dashboard(topic, payload, received_at, client_uuid, max_bytes, max_pixels,
                              reject)
        return _legacy(topic, payload, received_at, client_uuid, max_bytes, max_pixels)
    except ImageRefused as exc:
        return reject(exc.reason, str(exc))


def _dashboard(topic: str, payload: bytes, received_at: datetime, client_uuid: str,
               max_bytes: int, max_pixels: int, reject: Any) -> Capture | Rejection:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return reject(INVALID_JSON, f"payload: {exc}"[:300])
    try:
        parsed = DashboardPayload.model_validate(document)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        return reject(classify_error(error), describe_error(error))
    named = parsed.message.client_id if parsed.message else None
    if named is not None and named != client_uuid:
        return reject(UUID_MISMATCH, f"payload names {named[:40]!r}, topic names {client_uuid}")
    shot = parsed.content.screenshot if parsed.content else None
    if shot is None or not shot.data:
        raise ImageRefused(INVALID_IMAGE, "no content.screenshot.data in the dashboard")
    # Encoded, the limit's bytes take a third more room: refuse before decoding a huge text.
    if len(shot.data) > max_bytes * 4 // 3 + 4:
        raise ImageRefused(IMAGE_TOO_LARGE, f"about {len(shot.data) * 3 // 4} bytes, "
                           f"limit {max_bytes}")
    picture = inspect_picture(_decode_base64(shot.data), max_bytes=max_bytes,
                              max_pixels=max_pixels)
    capture = parsed.metadata.capture if parsed.metadata else None
    captured_at = (capture.captured_at if capture and capture.captured_at
                   else shot.timestamp or received_at)
    runtime = document.get("runtime") if parsed.runtime else None
    return Capture(client_uuid, received_at, captured_at,
                   capture.type if capture and capture.type else "periodic", DASHBOARD,
                   picture, runtime if isinstance(runtime, dict) else None, topic)


def _legacy(topic: str, payload: bytes, received_at: datetime, client_uuid: str,
            max_bytes: int, max_pixels: int) -> Capture:
    data = payload
    if payload[:1] == b"{":
        try:
            data = _decode_base64(LegacyJson.model_validate_json(payload).image)
        except ValidationError:
            raise ImageRefused(INVALID_IMAGE, 'neither image bytes nor {"image": "<base64>"}'
                               ) from None
    picture = inspect_picture(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return Capture(client_uuid, received_at, received_at, "periodic", LEGACY, picture,
                   None, topic)

"""Screenshots API: what each screen showed, as stored by the listener's screenshot path.

The pictures are served unchanged from SCREENSHOT_DIR with their content type, an ETag (their
sha256) and caching headers; `?size=thumb` gives the thumbnail made at ingest. Viewers and up
may see them; SCREENSHOT_MIN_ROLE can raise that, since a screenshot shows whatever was on
the screen. `/screenshots/<uuid>` and `/screenshots/<uuid>/priority` are the deployed
server's routes, kept for its tools, signed in like every other route.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint as FlaskBlueprint
from flask import send_file, url_for
from flask_smorest import Blueprint, abort
from sqlalchemy import func, select

from core.clock import utc_now
from core.fleet import iso
from core.models import Client, Screenshot
from core.screenshot_store import ScreenshotStore
from core.screenshots import PRIORITY_TYPES
from core.staff import role_at_least
from server import schemas
from server.api import known_client_id
from server.auth import current_principal, require_role
from server.extensions import current_settings, db

bp = Blueprint("screenshots", __name__, url_prefix="/api",
               description="Screenshots: what each screen showed")
compat = FlaskBlueprint("screenshots_compat", __name__, url_prefix="/screenshots")
CACHE_SECONDS = 3600  # a stored capture never changes; its URL names it


def may_see_screenshots() -> bool:
    """Whether the principal's role reaches SCREENSHOT_MIN_ROLE."""
    return role_at_least(current_principal().role, current_settings().screenshot_min_role)


def _may_see() -> None:
    if not may_see_screenshots():
        needed = current_settings().screenshot_min_role
        abort(403, message=f"screenshots need the {needed} role (SCREENSHOT_MIN_ROLE)")


def _client(client_uuid: str) -> str:
    _may_see()
    known_client_id(client_uuid)
    if db.session.get(Client, client_uuid) is None:
        abort(404, message=f"no client {client_uuid}")
    return client_uuid


def screenshot_json(shot: Screenshot) -> dict:
    urls = {"client_uuid": shot.client_uuid, "shot_id": shot.id}
    return {
        "id": shot.id, "capturedAt": iso(shot.captured_at), "receivedAt": iso(shot.received_at),
        "type": shot.type, "bytes": shot.bytes, "width": shot.width, "height": shot.height,
        "url": url_for("screenshots.screenshot", **urls),
        "thumbUrl": url_for("screenshots.screenshot", size="thumb", **urls),
    }


def serve(shot: Screenshot | None, thumb: bool):
    """The stored bytes, unchanged, or 404 when there is no such capture (any more)."""
    if shot is None:
        abort(404, message="no screenshot")
    path = ScreenshotStore.from_settings(current_settings()).path(shot, thumb=thumb)
    if not path.is_file():  # pruned between the query and now
        abort(404, message="no screenshot")
    response = send_file(
        path, mimetype="image/jpeg" if thumb else f"image/{shot.format}", conditional=True,
        etag=f"{shot.sha256}{'-thumb' if thumb else ''}", max_age=CACHE_SECONDS,
        last_modified=shot.received_at,
    )
    response.headers["Cache-Control"] = f"private, max-age={CACHE_SECONDS}"
    return response


def newest(client_uuid: str, limit: int) -> list[Screenshot]:
    return list(db.session.scalars(select(Screenshot).where(Screenshot.client_uuid == client_uuid)
                                   .order_by(Screenshot.id.desc()).limit(limit)))


def latest(client_uuid: str) -> Screenshot | None:
    return next(iter(newest(client_uuid, 1)), None)


def active_priority(client_uuid: str) -> Screenshot | None:
    ttl = timedelta(seconds=current_settings().priority_screenshot_ttl_seconds)
    return db.session.scalars(
        select(Screenshot).where(Screenshot.client_uuid == client_uuid,
                                 Screenshot.type.in_(PRIORITY_TYPES),
                                 Screenshot.received_at > utc_now() - ttl)
        .order_by(Screenshot.id.desc()).limit(1)).first()


@bp.route("/clients/<string:client_uuid>/screenshots")
@require_role("viewer")
@bp.arguments(schemas.PageArgs, location="query")
@bp.response(200, schemas.ScreenshotPageSchema)
def screenshot_list(args, client_uuid: str):
    """The client's captures, newest first."""
    where = Screenshot.client_uuid == _client(client_uuid)
    total = db.session.scalar(select(func.count()).select_from(Screenshot).where(where))
    rows = db.session.scalars(
        select(Screenshot).where(where).order_by(Screenshot.id.desc())
        .offset((args["page"] - 1) * args["perPage"]).limit(args["perPage"]))
    return {"total": total, "page": args["page"], "perPage": args["perPage"],
            "items": [screenshot_json(s) for s in rows]}


@bp.route("/clients/<string:client_uuid>/screenshots/latest")
@require_role("viewer")
@bp.arguments(schemas.PictureArgs, location="query")
@bp.response(200, description="the picture (image/jpeg or image/png)")
def latest_screenshot(args, client_uuid: str):
    """The newest capture's picture."""
    return serve(latest(_client(client_uuid)), args["size"] == "thumb")


@bp.route("/clients/<string:client_uuid>/screenshots/<int:shot_id>")
@require_role("viewer")
@bp.arguments(schemas.PictureArgs, location="query")
@bp.response(200, description="the picture (image/jpeg or image/png)")
def screenshot(args, client_uuid: str, shot_id: int):
    """One capture's picture."""
    shot = db.session.get(Screenshot, shot_id) if shot_id <= schemas.MAX_SHOT_ID else None
    if shot is not None and shot.client_uuid != _client(client_uuid):
        shot = None
    return serve(shot, args["size"] == "thumb")


@compat.route("/<string:client_uuid>")
@require_role("viewer")
def compat_latest(client_uuid: str):
    """The newest picture (the deployed server's route)."""
    return serve(latest(_client(client_uuid)), False)


@compat.route("/<string:client_uuid>/priority")
@require_role("viewer")
def compat_priority(client_uuid: str):
    """The active priority capture (event_start / event_stop within
    PRIORITY_SCREENSHOT_TTL_SECONDS), else the newest (the deployed server's route)."""
    client_uuid = _client(client_uuid)
    return serve(active_priority(client_uuid) or latest(client_uuid), False)

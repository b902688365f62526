"""The staff panels: fleet overview with the alert and crash panels, the screenshot wall,
client detail, events.

Pages are rendered on the server; the service-failed panel refreshes itself from the API
(frontend/static/panels.js). Device-supplied text is only ever inserted as text: Jinja
escapes it in templates, and the script uses textContent. A power command takes two steps:
the client page's button opens a confirmation page naming the screen and the action, whose
form (with its CSRF token) issues it, so one stray or framed click sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from core.activity import activity_timeline
from core.capabilities import ActionNotSupported, supported_actions
from core.clock import utc_now
from core.commands import ADMIN_ONLY_ACTIONS, CommandLocked, client_commands
from core.contract import CLIENT_ID_RE
from core.fleet import (
    FleetError,
    UnknownClient,
    age_text,
    client_page,
    crashed_clients,
    duration_text,
    event_page,
    fleet_overview,
)
from core.groups import assign_group, list_groups
from core.liveness import liveness
from core.models import Client, ClientLog, Screenshot
from core.screenshot_store import latest_captures
from core.staff import role_at_least
from server import schemas
from server.auth import current_principal, require_role
from server.charts import activity_chart
from server.commands import NeedsAdmin, issue_as
from server.dispatch import publish_pending_assignments
from server.extensions import current_settings, db
from server.screenshots import active_priority, may_see_screenshots, newest, screenshot_json

bp = Blueprint("web", __name__)
PER_PAGE = 50
WALL_PER_PAGE = 60  # tiles of the screenshot wall per page
FRESH_SCREENSHOT_SECONDS = 600  # an older latest capture is dimmed on the wall
PANEL_REASON = "requested in the staff panel"


@dataclass(frozen=True)
class PowerAction:
    label: str  # the button's
    question: str  # "Do you want to ... <screen>?"
    consequence: str


POWER_ACTIONS = {
    "restart_app": PowerAction("Restart app", "restart the player app on",
                               "The player restarts; the screen is blank for a moment."),
    "reboot_host": PowerAction("Reboot", "reboot",
                               "The screen reboots and is offline for a few minutes."),
    "shutdown_host": PowerAction("Shut down", "shut down",
                                 "The screen switches off. Someone must switch it on again "
                                 "on site."),
}


def page_context(**extra):
    principal = current_principal()
    return {"principal": principal, "can_ack": role_at_least(principal.role, "operator"),
            "can_see_screenshots": may_see_screenshots(),
            "is_admin": role_at_least(principal.role, "admin"),
            "refresh_ms": int(current_settings().panel_refresh_seconds * 1000), **extra}


def _query_args(schema) -> dict:
    """The query checked by the API's schema. A page ignores an invalid filter and shows what
    it would without it, rather than an error; an invalid page number is refused (400), as
    the API refuses it, so that no number beyond the bounds ever reaches the database."""
    given = {k: v for k, v in request.args.items() if k in schema.fields and v}
    errors = schema.validate(given)
    if "page" in errors:
        abort(400, description=f"page: {' '.join(errors['page'])}")
    return schema.load({k: v for k, v in given.items() if k not in errors})


def _fleet_filters() -> dict:
    return _query_args(schemas.ClientListArgs(only=("status", "search", "groupId", "sort",
                                                    "page")))


def _fleet_page(now, per_page: int) -> dict:
    """One page of screens under the fleet filters (the fleet page's and the wall's), each
    with its status and when it was last seen, and what the filters' form and pager need."""
    s = current_settings()
    args = _fleet_filters()
    status, search, sort, page = args.get("status"), args.get("search"), args["sort"], args["page"]
    group_id = args.get("groupId")
    total, clients = client_page(db.session, now, s.heartbeat_stale_seconds,
                                 s.heartbeat_down_seconds, status=status, search=search,
                                 group_id=group_id, sort=sort, page=page, per_page=per_page)
    rows = [
        {"client": c, "status": liveness(c.last_seen_at, now, s.heartbeat_stale_seconds,
                                         s.heartbeat_down_seconds),
         "seen": age_text((now - c.last_seen_at).total_seconds())}
        for c in clients
    ]
    return {"rows": rows, "total": total, "page": page,
            "pages": max(1, -(-total // per_page)),
            "groups": [g for g, _ in list_groups(db.session)],
            "filters": {"status": status or "", "search": search or "",
                        "groupId": group_id or "", "sort": sort}}


@bp.get("/")
@require_role("viewer", page=True)
def home():
    s = current_settings()
    now = utc_now()
    return render_template(
        "home.html",
        **page_context(
            counts=fleet_overview(db.session, now, s.heartbeat_stale_seconds,
                                  s.heartbeat_down_seconds),
            crashed=crashed_clients(db.session, now, s.heartbeat_stale_seconds),
            **_fleet_page(now, PER_PAGE),
        ),
    )


def _shot_view(shot: Screenshot | None, now) -> dict | None:
    """A capture as the panels show it: the API's fields, and how old it is."""
    if shot is None:
        return None
    seconds = max((now - shot.received_at).total_seconds(), 0.0)
    return {**screenshot_json(shot), "age": age_text(seconds), "since": duration_text(seconds),
            "fresh": seconds <= FRESH_SCREENSHOT_SECONDS,
            "captured": shot.captured_at.strftime("%Y-%m-%d %H:%M:%S UTC")}


@bp.get("/wall")
@require_role("viewer", page=True)
def wall():
    """The screenshot wall: each screen's latest capture, a page of the fleet at a time."""
    if not may_see_screenshots():
        abort(403, description="screenshots need the "
                               f"{current_settings().screenshot_min_role} role")
    now = utc_now()
    fleet = _fleet_page(now, WALL_PER_PAGE)
    shots = latest_captures(db.session, [row["client"].uuid for row in fleet["rows"]])
    for row in fleet["rows"]:
        row["shot"] = _shot_view(shots.get(row["client"].uuid), now)
    return render_template("wall.html", **page_context(
        fresh_minutes=FRESH_SCREENSHOT_SECONDS // 60, **fleet))


def _screen_section(client_uuid: str, now) -> dict:
    """The client page's Screen section: the latest capture, the active priority capture
    (when it is not the latest), and the kept history."""
    if not may_see_screenshots():
        return {"shots": []}
    history = newest(client_uuid, current_settings().screenshot_history)
    priority = active_priority(client_uuid)
    return {"shots": [_shot_view(shot, now) for shot in history],
            "priority_shot": _shot_view(priority, now)
            if priority is not None and history and priority.id != history[0].id else None}


def _client_or_404(client_uuid: str) -> Client:
    client = db.session.get(Client, client_uuid) if CLIENT_ID_RE.match(client_uuid) else None
    if client is None:
        abort(404)
    return client


@bp.get("/clients/<string:client_uuid>")
@require_role("viewer", page=True)
def client_detail(client_uuid: str):
    client = _client_or_404(client_uuid)
    s = current_settings()
    now = utc_now()
    logs = db.session.scalars(select(ClientLog).where(ClientLog.client_uuid == client_uuid)
                              .order_by(ClientLog.id.desc()).limit(50)).all()
    _, events = event_page(db.session, client_uuid=client_uuid, per_page=50)
    timeline = activity_timeline(db.session, client_uuid, now)
    commands, _ = client_commands(db.session, client_uuid, limit=20)
    supported, supported_from = supported_actions(client, s.default_supported_actions)
    return render_template(
        "client.html",
        **page_context(
            client=client, logs=logs, events=events, chart=activity_chart(timeline),
            commands=commands,
            power_actions=POWER_ACTIONS, supported=supported, supported_from=supported_from,
            groups=[g for g, _ in list_groups(db.session)],
            status=liveness(client.last_seen_at, now, s.heartbeat_stale_seconds,
                            s.heartbeat_down_seconds),
            seen=age_text((now - client.last_seen_at).total_seconds()),
            screen=_screen_section(client_uuid, now),
        ),
    )


@bp.get("/events")
@require_role("viewer", page=True)
def events():
    page = _query_args(schemas.PageArgs(only=("page",)))["page"]
    total, rows = event_page(db.session, page=page, per_page=PER_PAGE)
    return render_template("events.html", **page_context(
        events=rows, page=page, pages=max(1, -(-total // PER_PAGE))))


def _power_action(action: str) -> PowerAction:
    """The action, if it exists and the principal's role may issue it."""
    power = POWER_ACTIONS.get(action)
    if power is None:
        abort(404)
    needed = "admin" if action in ADMIN_ONLY_ACTIONS else "operator"
    if not role_at_least(current_principal().role, needed):
        abort(403)
    return power


@bp.get("/clients/<string:client_uuid>/commands/<string:action>")
@require_role("operator", page=True)
def confirm_command(client_uuid: str, action: str):
    """The confirmation page of a power command: it names the screen and the action."""
    client = _client_or_404(client_uuid)
    s = current_settings()
    return render_template("confirm_command.html", **page_context(
        client=client, action=action, power=_power_action(action), reason=PANEL_REASON,
        status=liveness(client.last_seen_at, utc_now(), s.heartbeat_stale_seconds,
                        s.heartbeat_down_seconds)))


def _form_reason() -> str:
    reason = " ".join(request.form.get("reason", "").replace("\x00", "").split())
    return reason[:500] or PANEL_REASON


@bp.post("/clients/<string:client_uuid>/commands/<string:action>")
@require_role("operator", page=True)
def issue_command(client_uuid: str, action: str):
    """The confirmation form's target: issue the command, then back to the client page,
    which says whether it was sent."""
    client = _client_or_404(client_uuid)
    power = _power_action(action)
    name = client.hostname or client.uuid
    try:
        issue_as(current_principal(), client.uuid, action, _form_reason())
    except (NeedsAdmin, UnknownClient, ActionNotSupported, CommandLocked) as exc:
        flash(f"{power.label} not sent: {exc}", "error")
    else:
        flash(f"{power.label} sent to {name}.", "notice")
    return redirect(url_for("web.client_detail", client_uuid=client.uuid, _anchor="commands"))


@bp.post("/clients/<string:client_uuid>/group")
@require_role("operator", page=True)
def set_group(client_uuid: str):
    """The client page's group form: put the screen in a group, or in none."""
    client = _client_or_404(client_uuid)
    given = request.form.get("group_id", "")
    try:
        group_id = int(given) if given else None
        if group_id is not None and not 1 <= group_id <= schemas.MAX_ID:
            raise ValueError
    except ValueError:
        abort(400, description="group_id: not a group id")
    try:
        assign_group(db.session, utc_now(), client.uuid, group_id, current_principal().name)
    except FleetError as exc:
        db.session.rollback()
        flash(f"Group not changed: {exc}", "error")
    else:
        db.session.commit()
        publish_pending_assignments()
        flash("Group changed; the screen is told on its group_id topic.", "notice")
    return redirect(url_for("web.client_detail", client_uuid=client.uuid))

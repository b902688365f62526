"""Notifications API and page (admin): channels, rules, a test message, and the log.

A channel's URL is write-only: the API and the page show its redacted form, never the URL.
Channels declared in NOTIFY_URLS are listed too; only `enabled` can be changed for them here.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import flash, redirect, render_template, request, url_for
from flask_smorest import Blueprint, abort
from sqlalchemy import func, select

from core.clock import utc_now
from core.fleet import iso
from core.groups import UnknownGroup, get_group, list_groups
from core.models import Notification, NotificationChannel, NotificationRule
from core.notify_channels import (
    ChannelConflict,
    ChannelError,
    ChannelNotFound,
    SecretBox,
    create_channel,
    delete_channel,
    get_channel,
    list_channels,
    update_channel,
)
from core.notify_messages import Wording
from core.notify_plan import DEFAULT_RULE, FAILED, SENT, TEST, load_rules
from core.notify_send import send
from core.staff import audit
from server import schemas
from server.auth import current_principal, require_role
from server.extensions import current_settings, db
from server.web import page_context

bp = Blueprint("notifications", __name__, url_prefix="/api/notifications",
               description="Notifications: channels, rules and the delivery log (admin)")
panel = FlaskBlueprint("notifications_panel", __name__)
LOG_PER_PAGE = 50


def channel_json(channel: NotificationChannel) -> dict[str, Any]:
    return {"id": channel.id, "name": channel.name, "url": channel.url_redacted,
            "tags": channel.tags or [], "enabled": channel.enabled, "source": channel.source,
            "createdAt": iso(channel.created_at), "updatedAt": iso(channel.updated_at)}


def notification_json(row: Notification) -> dict[str, Any]:
    return {"id": row.id, "createdAt": iso(row.created_at), "sentAt": iso(row.sent_at),
            "channelId": row.channel_id, "channel": row.channel_shown, "eventId": row.event_id,
            "clientUuid": row.client_uuid, "eventType": row.event_type,
            "severity": row.severity, "kind": row.kind, "state": row.state,
            "attempts": row.attempts, "error": row.error, "title": row.title,
            "foldedInto": row.folded_into}


def rule_json(rule: NotificationRule) -> dict[str, Any]:
    return {"id": rule.id, "eventTypes": rule.event_types, "minSeverity": rule.min_severity,
            "channelIds": rule.channel_ids, "groupId": rule.group_id,
            "createdAt": iso(rule.created_at)}


def _box() -> SecretBox:
    return SecretBox.from_settings(current_settings())


def _channel(channel_id: int) -> NotificationChannel:
    try:
        if channel_id > schemas.MAX_ID:
            raise ChannelNotFound(f"no notification channel {channel_id}")
        return get_channel(db.session, channel_id)
    except ChannelNotFound as exc:
        abort(404, message=str(exc))


def _refuse(exc: ChannelError) -> None:
    db.session.rollback()
    abort(409 if isinstance(exc, ChannelConflict) else 422, message=str(exc))


def send_test(channel: NotificationChannel) -> Notification:
    """Send a test message now (the request waits, at most the send timeout) and log it."""
    settings = current_settings()
    now = utc_now()
    title, body = Wording(settings.notify_language, settings.notify_timezone,
                          settings.public_url).test(now)
    try:
        error = send(_box().decrypt(channel.url_encrypted), title, body,
                     timeout=settings.notify_send_timeout_seconds)
    except ChannelError as exc:
        error = str(exc)
    row = Notification(channel_id=channel.id, channel_shown=channel.url_redacted,
                       event_type="test", severity="info", kind=TEST, title=title, body=body,
                       state=FAILED if error else SENT, attempts=1, error=error,
                       created_at=now, sent_at=None if error else utc_now())
    db.session.add(row)
    audit(db.session, now, current_principal().name, "notification_channel_tested",
          str(channel.id), ok=error is None)
    db.session.commit()
    return row


def log_page(page: int, per_page: int) -> tuple[int, list[Notification]]:
    total = db.session.scalar(select(func.count()).select_from(Notification))
    rows = db.session.scalars(select(Notification).order_by(Notification.id.desc())
                              .offset((page - 1) * per_page).limit(per_page)).all()
    return total, list(rows)


# API --------------------------------------------------------------------------------------


@bp.route("/channels")
@require_role("admin")
@bp.response(200, schemas.ChannelListSchema)
def channel_list():
    """Every channel, its URL redacted."""
    return {"items": [channel_json(c) for c in list_channels(db.session)]}


@bp.route("/channels", methods=["POST"])
@require_role("admin")
@bp.arguments(schemas.ChannelCreateSchema)
@bp.response(201, schemas.ChannelEnvelopeSchema)
@bp.alt_response(409, description="a channel of that name exists")
def channel_create(args):
    """Add a channel: an Apprise URL, stored encrypted."""
    try:
        channel = create_channel(db.session, _box(), utc_now(), name=args["name"],
                                 url=args["url"], tags=args.get("tags") or (),
                                 enabled=args["enabled"], actor=current_principal().name)
    except ChannelError as exc:
        _refuse(exc)
    db.session.commit()
    return {"channel": channel_json(channel)}


@bp.route("/channels/<int:channel_id>", methods=["PATCH"])
@require_role("admin")
@bp.arguments(schemas.ChannelPatchSchema)
@bp.response(200, schemas.ChannelEnvelopeSchema)
def channel_patch(args, channel_id: int):
    """Rename a channel, replace its URL or tags, or switch it off and on."""
    _channel(channel_id)
    try:
        channel = update_channel(db.session, _box(), utc_now(), channel_id, args,
                                 current_principal().name)
    except ChannelError as exc:
        _refuse(exc)
    db.session.commit()
    return {"channel": channel_json(channel)}


@bp.route("/channels/<int:channel_id>", methods=["DELETE"])
@require_role("admin")
@bp.response(204)
def channel_delete(channel_id: int):
    """Remove a channel (its log entries stay, with the redacted URL)."""
    _channel(channel_id)
    try:
        delete_channel(db.session, utc_now(), channel_id, current_principal().name)
    except ChannelError as exc:
        _refuse(exc)
    db.session.commit()


@bp.route("/channels/<int:channel_id>/test", methods=["POST"])
@require_role("admin")
@bp.response(200, schemas.ChannelTestSchema)
def channel_test(channel_id: int):
    """Send a test message now; says whether the channel took it."""
    row = send_test(_channel(channel_id))
    return {"ok": row.state == SENT, "error": row.error, "notificationId": row.id}


@bp.route("/log")
@require_role("admin")
@bp.arguments(schemas.PageArgs, location="query")
@bp.response(200, schemas.NotificationPageSchema)
def notification_log(args):
    """What was sent where, newest first: time, channel (redacted), event, outcome,
    attempts, error."""
    total, rows = log_page(args["page"], args["perPage"])
    return {"total": total, "page": args["page"], "perPage": args["perPage"],
            "items": [notification_json(r) for r in rows]}


@bp.route("/rules")
@require_role("admin")
@bp.response(200, schemas.RuleListSchema)
def rule_list():
    """The stored rules; with none, the defaults apply (and are listed)."""
    rows = db.session.scalars(select(NotificationRule).order_by(NotificationRule.id)).all()
    if rows:
        return {"items": [rule_json(r) for r in rows], "defaults": False}
    return {"items": [{"id": 0, "eventTypes": sorted(DEFAULT_RULE.event_types),
                       "minSeverity": DEFAULT_RULE.min_severity, "channelIds": [],
                       "groupId": None, "createdAt": None}], "defaults": True}


@bp.route("/rules", methods=["POST"])
@require_role("admin")
@bp.arguments(schemas.RuleCreateSchema)
@bp.response(201, schemas.RuleEnvelopeSchema)
def rule_create(args):
    """Add a rule. Once any rule is stored, the defaults no longer apply."""
    known = {c.id for c in list_channels(db.session)}
    unknown = sorted(set(args["channelIds"]) - known)
    if unknown:
        abort(422, message=f"no notification channel {unknown[0]}")
    if args["groupId"] is not None:
        try:
            get_group(db.session, args["groupId"])
        except UnknownGroup as exc:
            abort(422, message=str(exc))
    now = utc_now()
    rule = NotificationRule(event_types=args["eventTypes"], min_severity=args["minSeverity"],
                            channel_ids=args["channelIds"], group_id=args["groupId"],
                            created_at=now)
    db.session.add(rule)
    db.session.flush()
    audit(db.session, now, current_principal().name, "notification_rule_created", str(rule.id))
    db.session.commit()
    return {"rule": rule_json(rule)}


@bp.route("/rules/<int:rule_id>", methods=["DELETE"])
@require_role("admin")
@bp.response(204)
def rule_delete(rule_id: int):
    """Remove a rule (with none left, the defaults apply again)."""
    rule = db.session.get(NotificationRule, rule_id) if rule_id <= schemas.MAX_ID else None
    if rule is None:
        abort(404, message=f"no notification rule {rule_id}")
    db.session.delete(rule)
    audit(db.session, utc_now(), current_principal().name, "notification_rule_deleted",
          str(rule_id))
    db.session.commit()


# The page ---------------------------------------------------------------------------------


@panel.get("/notifications")
@require_role("admin", page=True)
def page():
    number = request.args.get("page", "1")
    number = int(number) if number.isdigit() and 0 < int(number) <= schemas.MAX_PAGE else 1
    total, rows = log_page(number, LOG_PER_PAGE)
    return render_template("notifications.html", **page_context(
        channels=list_channels(db.session), rules=load_rules(db.session),
        groups={g.id: g.name for g, _ in list_groups(db.session)},
        log=rows, page=number, pages=max(1, -(-total // LOG_PER_PAGE)), total=total))


def _back():
    return redirect(url_for("notifications_panel.page"))


@panel.post("/notifications/channels")
@require_role("admin", page=True)
def add_channel_form():
    form = request.form
    name, url = form.get("name", "").strip(), form.get("url", "").strip()
    tags = [t for t in form.get("tags", "").replace(",", " ").split() if t]
    if not name or not url or len(name) > 64 or len(url) > 2000 or "\x00" in name + url:
        flash("Channel not added: give a name (up to 64 characters) and an Apprise URL.",
              "error")
        return _back()
    try:
        create_channel(db.session, _box(), utc_now(), name=name, url=url, tags=tags,
                       actor=current_principal().name)
    except ChannelError as exc:
        db.session.rollback()
        flash(f"Channel not added: {exc}", "error")
        return _back()
    db.session.commit()
    flash(f"Channel {name} added.", "notice")
    return _back()


@panel.post("/notifications/channels/<int:channel_id>/<string:action>")
@require_role("admin", page=True)
def channel_action_form(channel_id: int, action: str):
    channel = _channel(channel_id)
    name = channel.name
    try:
        if action == "test":
            row = send_test(channel)
            if row.state == SENT:
                flash(f"Test message sent to {name}.", "notice")
            else:
                flash(f"Test message to {name} failed: {row.error}", "error")
            return _back()
        if action == "delete":
            delete_channel(db.session, utc_now(), channel_id, current_principal().name)
        elif action in ("enable", "disable"):
            update_channel(db.session, _box(), utc_now(), channel_id,
                           {"enabled": action == "enable"}, current_principal().name)
        else:
            abort(404)
    except ChannelError as exc:
        db.session.rollback()
        flash(f"{name}: {exc}", "error")
        return _back()
    db.session.commit()
    flash(f"{name}: {action}d.", "notice")
    return _back()

"""Commands API: issue, follow and cancel reboot_host, shutdown_host and restart_app.

A request never waits for the device: it answers 202 with the command's id, and the
lifecycle (DESIGN.md §5) is followed with GET. Every request is audited, refusals too.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import jsonify, make_response
from flask_smorest import Blueprint, abort

from core import commands
from core.capabilities import ActionNotSupported
from core.clock import utc_now
from core.commands import (
    CommandError,
    CommandLocked,
    CommandPolicy,
    NotCancellable,
    UnknownCommand,
)
from core.fleet import UnknownClient, iso
from core.models import ClientCommand
from core.staff import audit, role_at_least
from server import schemas
from server.api import known_client_id
from server.auth import Principal, current_principal, require_role
from server.dispatch import command_dispatcher
from server.extensions import current_settings, db

log = logging.getLogger(__name__)
bp = Blueprint("commands", __name__, url_prefix="/api",
               description="Remote commands with their lifecycle")


def command_json(command: ClientCommand, *, with_history: bool = False) -> dict[str, Any]:
    body = {
        "commandId": command.id, "clientUuid": command.client_uuid, "action": command.action,
        "state": command.state, "reason": command.reason, "requestedBy": command.requested_by,
        "forced": command.forced, "issuedAt": iso(command.issued_at),
        "expiresAt": iso(command.expires_at), "sentAt": iso(command.sent_at),
        "acceptedAt": iso(command.accepted_at),
        "executionStartedAt": iso(command.execution_started_at),
        "completedAt": iso(command.completed_at), "failedAt": iso(command.failed_at),
        "finishedAt": iso(command.finished_at), "completionDueAt": iso(command.completion_due_at),
        "errorCode": command.error_code, "errorMessage": command.error_message,
        "groupId": command.group_id, "held": command.held,
    }
    if with_history:
        body["history"] = [
            {"state": t.state, "at": iso(t.at), "source": t.source}
            for t in commands.history(db.session, command.id)
        ]
    return body


class NeedsAdmin(CommandError):
    """The action (shutdown_host) or `force` is for admins."""


def issue_as(principal: Principal, client_uuid: str, action: str, reason: str,
             force: bool = False) -> ClientCommand:
    """Issue a command for `principal`, audit it (refusals too), commit and publish it.

    Shared by the API and the panels' confirmation form. Raises NeedsAdmin, UnknownClient,
    ActionNotSupported or CommandLocked (after auditing the refusal).
    """
    now = utc_now()
    check_role(principal, client_uuid, action, force)
    try:
        command = commands.issue_command(
            db.session, now, CommandPolicy.from_settings(current_settings()),
            client_uuid=client_uuid, action=action, reason=reason,
            requested_by=principal.name, force=force,
        )
    except UnknownClient:
        db.session.rollback()
        raise
    except (ActionNotSupported, CommandLocked) as exc:
        db.session.rollback()
        _audit_refusal(principal.name, client_uuid, action, str(exc), **refusal_details(exc))
        raise
    audit(db.session, now, principal.name, "command_issued", client_uuid,
          commandId=command.id, commandAction=action, reason=reason, forced=force)
    db.session.commit()
    command_dispatcher().dispatch(command)
    return command


def check_role(principal: Principal, target: str, action: str, force: bool = False) -> None:
    """shutdown_host and force are for admins; a refusal is audited."""
    if (action in commands.ADMIN_ONLY_ACTIONS or force) and not role_at_least(
            principal.role, "admin"):
        why = f"{'force' if force else action} needs the admin role"
        _audit_refusal(principal.name, target, action, why)
        raise NeedsAdmin(why)


def refusal_details(exc: ActionNotSupported | CommandLocked) -> dict[str, Any]:
    if isinstance(exc, CommandLocked):
        return {"blockingCommandId": exc.blocking_id}
    return {"supportedActions": exc.supported}


def _locked(exc: CommandLocked):
    body = {"error": "Conflict", "message": str(exc), "retryAfter": exc.retry_after,
            "blockingCommand": {"commandId": exc.blocking_id, "action": exc.blocking_action,
                                "state": exc.blocking_state}}
    response = make_response(jsonify(body), 409)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _issue(client_uuid: str, action: str, reason: str, force: bool):
    try:
        command = issue_as(current_principal(), known_client_id(client_uuid), action, reason,
                           force)
    except NeedsAdmin as exc:
        abort(403, message=str(exc))
    except UnknownClient as exc:
        abort(404, message=str(exc))
    except ActionNotSupported as exc:
        abort(422, message=str(exc))
    except CommandLocked as exc:
        return _locked(exc)
    return {"command": command_json(command)}


def _audit_refusal(actor: str, client_uuid: str, action: str, why: str, **details: Any) -> None:
    audit(db.session, utc_now(), actor, "command_refused", client_uuid, commandAction=action,
          why=why, **details)
    db.session.commit()


@bp.route("/clients/<string:client_uuid>/commands", methods=["POST"])
@require_role("operator")
@bp.arguments(schemas.CommandRequestSchema)
@bp.response(202, schemas.CommandEnvelopeSchema)
@bp.alt_response(409, schema=schemas.LockedSchema, description="locked out; see Retry-After")
@bp.alt_response(422, description="the client does not support the action (supportedActions)")
def issue(args, client_uuid: str):
    """Issue a command. Operators may restart_app and reboot_host; shutdown_host and force
    are for admins. An action the client does not support is refused (422) unless forced."""
    return _issue(client_uuid, args["action"], args["reason"], args["force"])


def _shortcut(action: str, doc: str):
    def view(args, client_uuid: str):
        return _issue(client_uuid, action, args["reason"], args["force"])

    view.__doc__ = doc
    view.__name__ = f"issue_{action}"
    return view


for _path, _action, _doc in (
    ("restart", "reboot_host", "Reboot the screen (compatible route for reboot_host)."),
    ("shutdown", "shutdown_host", "Shut the screen down (admin; compatible route)."),
    ("restart_app", "restart_app", "Restart the player application (compatible route)."),
):
    bp.route(f"/clients/<string:client_uuid>/{_path}", methods=["POST"])(
        require_role("operator")(
            bp.arguments(schemas.ShortcutRequestSchema, required=False)(
                bp.response(202, schemas.CommandEnvelopeSchema)(
                    bp.alt_response(409, schema=schemas.LockedSchema)(
                        _shortcut(_action, _doc))))))


@bp.route("/clients/<string:client_uuid>/commands", methods=["GET"])
@require_role("viewer")
@bp.arguments(schemas.PageArgs, location="query")
@bp.response(200, schemas.CommandPageSchema)
def client_command_list(args, client_uuid: str):
    """The client's commands, newest first."""
    try:
        rows, total = commands.client_commands(
            db.session, known_client_id(client_uuid), limit=args["perPage"],
            offset=(args["page"] - 1) * args["perPage"],
        )
    except UnknownClient as exc:
        abort(404, message=str(exc))
    return {"total": total, "page": args["page"], "perPage": args["perPage"],
            "items": [command_json(c) for c in rows]}


def _command_id(command_id: str) -> str:
    if not schemas.CLIENT_ID_RE.match(command_id):
        abort(404, message=f"no command {command_id[:40]!r}: not a command id")
    return command_id


@bp.route("/clients/commands/<string:command_id>")
@require_role("viewer")
@bp.response(200, schemas.CommandEnvelopeSchema)
def command_detail(command_id: str):
    """One command with every state it took."""
    try:
        command = commands.get_command(db.session, _command_id(command_id))
    except UnknownCommand as exc:
        abort(404, message=str(exc))
    return {"command": command_json(command, with_history=True)}


@bp.route("/clients/commands/<string:command_id>/cancel", methods=["POST"])
@require_role("operator")
@bp.response(200, schemas.CommandEnvelopeSchema)
def cancel(command_id: str):
    """Withdraw a command that is still queued (the broker has not taken it)."""
    principal = current_principal()
    now = utc_now()
    try:
        command = commands.cancel_command(db.session, now, _command_id(command_id),
                                          principal.name)
    except UnknownCommand as exc:
        abort(404, message=str(exc))
    except NotCancellable as exc:
        db.session.rollback()
        abort(409, message=str(exc))
    audit(db.session, now, principal.name, "command_cancelled", command.client_uuid,
          commandId=command.id, commandAction=command.action)
    db.session.commit()
    return {"command": command_json(command)}

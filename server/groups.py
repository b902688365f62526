"""Groups API: groups (admin), a screen's group (operator), its capabilities (admin), and
group commands: one command per member, each under its own lockout and capabilities, at most
GROUP_COMMAND_MAX_PARALLEL of a group running at once."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint, abort

from core import commands, groups
from core.capabilities import ActionNotSupported
from core.clock import utc_now
from core.commands import CommandLocked, CommandPolicy
from core.fleet import UnknownClient, iso
from core.groups import GroupNameTaken, UnknownGroup
from core.models import Group
from core.staff import audit
from server import schemas
from server.api import client_json, known_client_id
from server.auth import current_principal, require_role
from server.commands import NeedsAdmin, check_role, command_json, refusal_details
from server.dispatch import command_dispatcher, publish_pending_assignments
from server.extensions import current_settings, db

bp = Blueprint("groups", __name__, url_prefix="/api",
               description="Groups of screens, their commands, and capabilities")


def group_json(group: Group, members: int) -> dict[str, Any]:
    return {"id": group.id, "name": group.name, "description": group.description,
            "supportedActions": group.supported_actions, "members": members,
            "createdAt": iso(group.created_at)}


def _group(group_id: int) -> Group:
    if group_id > schemas.MAX_ID:  # Flask's int converter takes any size; the column does not
        abort(404, message=f"no group {group_id}")
    try:
        return groups.get_group(db.session, group_id)
    except UnknownGroup as exc:
        abort(404, message=str(exc))


@bp.route("/groups")
@require_role("viewer")
@bp.response(200, schemas.GroupListSchema)
def group_list():
    """Every group with its number of members, by name."""
    return {"items": [group_json(g, n) for g, n in groups.list_groups(db.session)]}


@bp.route("/groups", methods=["POST"])
@require_role("admin")
@bp.arguments(schemas.GroupCreateSchema)
@bp.response(201, schemas.GroupEnvelopeSchema)
@bp.alt_response(409, description="a group of that name exists")
def group_create(args):
    """Create a group."""
    try:
        group = groups.create_group(
            db.session, utc_now(), name=args["name"], description=args["description"],
            supported_actions=args["supportedActions"], actor=current_principal().name)
    except GroupNameTaken as exc:
        db.session.rollback()
        abort(409, message=str(exc))
    db.session.commit()
    return {"group": group_json(group, 0)}


@bp.route("/groups/<int:group_id>", methods=["PATCH"])
@require_role("admin")
@bp.arguments(schemas.GroupPatchSchema)
@bp.response(200, schemas.GroupEnvelopeSchema)
def group_patch(args, group_id: int):
    """Rename a group, describe it, or set what its members support (null clears)."""
    fields = {"name": "name", "description": "description",
              "supportedActions": "supported_actions"}
    changes = {fields[key]: value for key, value in args.items()}
    _group(group_id)
    try:
        group = groups.update_group(db.session, utc_now(), group_id, changes,
                                    current_principal().name)
    except GroupNameTaken as exc:
        db.session.rollback()
        abort(409, message=str(exc))
    db.session.commit()
    return {"group": group_json(group, groups.member_count(db.session, group_id))}


@bp.route("/groups/<int:group_id>", methods=["DELETE"])
@require_role("admin")
@bp.response(204)
def group_delete(group_id: int):
    """Delete a group. Its screens leave it (their retained group_id is cleared) and its
    group commands still waiting for their turn are cancelled."""
    _group(group_id)
    groups.delete_group(db.session, utc_now(), group_id, current_principal().name)
    db.session.commit()
    publish_pending_assignments()
    return ""


@bp.route("/clients/<string:client_uuid>/group", methods=["PUT"])
@require_role("operator")
@bp.arguments(schemas.GroupAssignmentSchema)
@bp.response(200, schemas.ClientSchema)
def client_group(args, client_uuid: str):
    """Put a screen in a group (`groupId` null: in none). The screen is told on its retained
    `group_id` topic, at once or, if the broker is away, as soon as it is back."""
    try:
        client = groups.assign_group(db.session, utc_now(), known_client_id(client_uuid),
                                     args["groupId"], current_principal().name)
    except UnknownClient as exc:
        abort(404, message=str(exc))
    except UnknownGroup as exc:
        db.session.rollback()
        abort(422, message=str(exc))
    db.session.commit()
    publish_pending_assignments()
    return client_json(client)


@bp.route("/clients/<string:client_uuid>/capabilities", methods=["PUT"])
@require_role("admin")
@bp.arguments(schemas.SupportedActionsSchema)
@bp.response(200, schemas.ClientSchema)
def client_capabilities(args, client_uuid: str):
    """Set what a screen supports, overriding its group, discovery and what was learned."""
    try:
        client = groups.set_supported_actions(db.session, utc_now(),
                                              known_client_id(client_uuid),
                                              args["supportedActions"], current_principal().name)
    except UnknownClient as exc:
        abort(404, message=str(exc))
    db.session.commit()
    return client_json(client)


@bp.route("/groups/<int:group_id>/commands", methods=["POST"])
@require_role("operator")
@bp.arguments(schemas.GroupCommandRequestSchema)
@bp.response(202, schemas.GroupCommandResultSchema)
def group_command(args, group_id: int):
    """One command per member, each under its own lockout and capabilities. The answer says
    which were issued and which were refused and why. At most GROUP_COMMAND_MAX_PARALLEL run
    at once; the others are `held` (queued) and go as the running ones end."""
    principal = current_principal()
    action, reason = args["action"], args["reason"]
    group = _group(group_id)
    try:
        check_role(principal, f"group:{group_id}", action)
    except NeedsAdmin as exc:
        abort(403, message=str(exc))
    now = utc_now()
    policy = CommandPolicy.from_settings(current_settings())
    issued, refused = [], []
    for client in groups.members(db.session, group_id):
        try:  # a refusal writes nothing, so the others go on in the same transaction
            command = commands.issue_command(
                db.session, now, policy, client_uuid=client.uuid, action=action,
                reason=reason, requested_by=principal.name, group_id=group_id)
        except (ActionNotSupported, CommandLocked) as exc:
            locked = isinstance(exc, CommandLocked)
            refused.append({
                "clientUuid": client.uuid, "hostname": client.hostname,
                "code": "locked" if locked else "unsupported_action", "message": str(exc),
                "retryAfter": exc.retry_after if locked else None})
            audit(db.session, now, principal.name, "command_refused", client.uuid,
                  commandAction=action, why=str(exc), groupId=group_id, **refusal_details(exc))
            continue
        audit(db.session, now, principal.name, "command_issued", client.uuid,
              commandId=command.id, commandAction=action, reason=reason, groupId=group_id)
        issued.append(command)
    released = commands.release_group_commands(db.session, now, policy, group_id)
    for command in released:
        command.last_dispatch_at = now
    audit(db.session, now, principal.name, "group_command", f"group:{group_id}",
          commandAction=action, group=group.name, issued=len(issued), refused=len(refused))
    db.session.commit()
    if released:
        dispatcher = command_dispatcher()
        for command in released:
            dispatcher.dispatch(command)
    return {"groupId": group_id, "action": action, "maxParallel": policy.group_max_parallel,
            "issued": [command_json(c) for c in issued], "refused": refused}

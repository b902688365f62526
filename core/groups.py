"""Groups of screens that staff manage, and telling each screen its group.

The server is the source of truth (as in the deployed system): a screen learns its group from
the retained `infoscreen/{uuid}/group_id` topic, an integer, or an empty payload when it has
none. An assignment is written with `group_pending` set, an outbox like the commands' queue:
the web worker publishes at once, the scheduler again until the broker took it. A group a
device reports in discovery is kept apart (`reported_group_id`) and never overrides staff.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.capabilities import ordered
from core.fleet import FleetError, UnknownClient
from core.models import Client, ClientCommand, Group
from core.staff import audit


class UnknownGroup(FleetError):
    pass


class GroupNameTaken(ValueError):
    pass


def get_group(session: Session, group_id: int, *, for_update: bool = False) -> Group:
    group = session.get(Group, group_id, with_for_update=for_update)
    if group is None:
        raise UnknownGroup(f"no group {group_id}")
    return group


def list_groups(session: Session) -> list[tuple[Group, int]]:
    """Every group with its number of members, by name."""
    members = (select(Client.group_id, func.count().label("n"))
               .where(Client.group_id.is_not(None)).group_by(Client.group_id).subquery())
    rows = session.execute(
        select(Group, func.coalesce(members.c.n, 0))
        .outerjoin(members, members.c.group_id == Group.id).order_by(Group.name, Group.id)
    ).all()
    return [(group, count) for group, count in rows]


def member_count(session: Session, group_id: int) -> int:
    return session.scalar(select(func.count()).where(Client.group_id == group_id)) or 0


def members(session: Session, group_id: int) -> list[Client]:
    return list(session.scalars(
        select(Client).where(Client.group_id == group_id).order_by(Client.hostname, Client.uuid)
    ))


def _free_name(session: Session, name: str, group_id: int | None = None) -> None:
    clash = session.scalar(select(Group.id).where(Group.name == name))
    if clash is not None and clash != group_id:
        raise GroupNameTaken(f"a group named {name!r} exists already (id {clash})")


def create_group(session: Session, now: datetime, *, name: str, description: str | None,
                 supported_actions: Sequence[str] | None, actor: str) -> Group:
    _free_name(session, name)
    group = Group(name=name, description=description, created_at=now,
                  supported_actions=None if supported_actions is None
                  else ordered(supported_actions))
    session.add(group)
    session.flush()
    audit(session, now, actor, "group_created", str(group.id), name=name)
    return group


def update_group(session: Session, now: datetime, group_id: int, changes: dict[str, Any],
                 actor: str) -> Group:
    """`changes` holds any of name, description, supported_actions (None clears the last two)."""
    group = get_group(session, group_id, for_update=True)
    if "name" in changes:
        _free_name(session, changes["name"], group_id)
        group.name = changes["name"]
    if "description" in changes:
        group.description = changes["description"]
    if "supported_actions" in changes:
        actions = changes["supported_actions"]
        group.supported_actions = None if actions is None else ordered(actions)
    audit(session, now, actor, "group_changed", str(group_id), **changes)
    return group


def delete_group(session: Session, now: datetime, group_id: int, actor: str) -> int:
    """Delete a group: its members leave it (and are told so), and its group commands that
    still wait for their turn are cancelled. Returns how many members it had."""
    group = get_group(session, group_id, for_update=True)
    left = session.execute(
        update(Client).where(Client.group_id == group_id)
        .values(group_id=None, group_pending=True, group_dispatch_at=None)
    ).rowcount
    waiting = session.execute(
        update(ClientCommand)
        .where(ClientCommand.group_id == group_id, ClientCommand.held.is_(True),
               ClientCommand.state == "queued")
        .values(state="cancelled", held=False, finished_at=now)
        .returning(ClientCommand.id)
    ).scalars().all()
    audit(session, now, actor, "group_deleted", str(group_id), name=group.name, members=left,
          cancelledCommands=len(waiting))
    session.delete(group)
    return left


def assign_group(session: Session, now: datetime, client_uuid: str, group_id: int | None,
                 actor: str) -> Client:
    client = session.get(Client, client_uuid, with_for_update=True)
    if client is None:
        raise UnknownClient(f"no client {client_uuid}")
    if group_id is not None:
        get_group(session, group_id)
    if client.group_id != group_id:
        before = client.group_id
        # A statement, not attribute changes: the ORM would leave out group_pending when it
        # was already true in the loaded row, and a PUBACK of the previous assignment may
        # clear it in between.
        session.execute(
            update(Client).where(Client.uuid == client_uuid)
            .values(group_id=group_id, group_pending=True, group_dispatch_at=None)
        )
        audit(session, now, actor, "client_group_set", client_uuid, groupId=group_id,
              previousGroupId=before)
    session.refresh(client)  # the relationship follows the new id
    return client


def set_supported_actions(session: Session, now: datetime, client_uuid: str,
                          actions: Sequence[str] | None, actor: str) -> Client:
    """An admin's setting for one client (None: back to the group, discovery or default)."""
    client = session.get(Client, client_uuid, with_for_update=True)
    if client is None:
        raise UnknownClient(f"no client {client_uuid}")
    client.supported_actions = None if actions is None else ordered(actions)
    audit(session, now, actor, "client_actions_set", client_uuid,
          supportedActions=client.supported_actions)
    return client


# The retained group_id at the broker ------------------------------------------------------


def group_payload(group_id: int | None) -> bytes:
    """What the deployed clients read: the integer as text, empty for no group."""
    return b"" if group_id is None else str(group_id).encode()


def assignments_to_publish(session: Session, now: datetime, *, retry_after: float,
                           limit: int = 500) -> list[tuple[str, int | None]]:
    """(client, group) pairs whose retained group_id the broker does not have yet, claimed so
    that the next step within `retry_after` seconds does not take them again."""
    cutoff = now - timedelta(seconds=retry_after)
    rows = session.scalars(
        select(Client)
        .where(Client.group_pending.is_(True),
               Client.group_dispatch_at.is_(None) | (Client.group_dispatch_at <= cutoff))
        .order_by(Client.uuid).limit(limit).with_for_update(skip_locked=True)
    ).all()
    for client in rows:
        client.group_dispatch_at = now
    return [(c.uuid, c.group_id) for c in rows]


def mark_group_published(session: Session, client_uuid: str, group_id: int | None) -> bool:
    """The broker took the retained group_id. Only clears the outbox when the assignment is
    still the one published (staff may have changed it meanwhile)."""
    same = (Client.group_id.is_(None) if group_id is None else Client.group_id == group_id)
    return bool(session.execute(
        update(Client).where(Client.uuid == client_uuid, same).values(group_pending=False)
    ).rowcount)

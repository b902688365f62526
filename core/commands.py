"""The command lifecycle (DESIGN.md §5): issuing with lockout, acks, PUBACKs, the sweep.

Every function takes a session and plain values and leaves the commit to its caller: the
REST view, the listener's batch and the scheduler's steps all call the same rules. States
only ever move forward; each move is kept in `client_command_history` with its source.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.orm import Session

from core.capabilities import check_supported, learn_from_failure
from core.clock import iso_z
from core.config import Settings
from core.db import dialect_insert
from core.events import insert_events, new_event
from core.fleet import UnknownClient
from core.logs import ids
from core.models import (
    COMMAND_ACTIONS,
    OPEN_COMMAND_STATES,
    Client,
    ClientCommand,
    CommandLock,
    CommandTransition,
    Event,
    Group,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"
# How far along a state is; an ack or a PUBACK only ever moves a command to a higher rank.
_RANK = {"queued": 0, "sent": 1, "accepted": 2, "execution_started": 3}
FINAL_RANK = 4
ADMIN_ONLY_ACTIONS = frozenset({"shutdown_host"})
SWEEP_CHUNK = 1000
AUTO_RECOVERY = "auto-recovery"  # requested_by of the scheduler's own commands


def rank(state: str) -> int:
    return _RANK.get(state, FINAL_RANK)


class CommandError(Exception):
    """A command request that cannot be carried out; the message says why."""


class UnknownCommand(CommandError, LookupError):
    pass


class NotCancellable(CommandError):
    def __init__(self, command: ClientCommand):
        super().__init__(
            f"command {command.id} is {command.state}; only a queued command can be cancelled"
        )
        self.command = command


class CommandLocked(CommandError):
    """Lockout: another power command is open or was issued too recently. Holds plain values,
    so that it outlives the transaction that was rolled back."""

    def __init__(self, blocking: ClientCommand, retry_after: int):
        why = "is still open" if blocking.is_open else "was issued less than the lockout ago"
        super().__init__(
            f"client {blocking.client_uuid} is locked: {blocking.action} command "
            f"{blocking.id} ({blocking.state}) {why}; retry after {retry_after} s"
        )
        self.blocking_id = blocking.id
        self.blocking_action = blocking.action
        self.blocking_state = blocking.state
        self.retry_after = retry_after


@dataclass(frozen=True)
class CommandPolicy:
    expiry_seconds: int
    lockout_seconds: int
    completion_seconds: Mapping[str, int]  # per action
    default_actions: tuple[str, ...] = COMMAND_ACTIONS  # core.capabilities
    group_max_parallel: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> CommandPolicy:
        return cls(
            expiry_seconds=settings.command_expiry_seconds,
            lockout_seconds=settings.command_lockout_seconds,
            completion_seconds={a: settings.completion_seconds(a) for a in COMMAND_ACTIONS},
            default_actions=settings.default_supported_actions,
            group_max_parallel=settings.group_command_max_parallel,
        )


def _transition(command_id: str, state: str, at: datetime, source: str,
                **details: Any) -> CommandTransition:
    return CommandTransition(
        command_id=command_id, state=state, at=at, source=source, details=details or None
    )


def command_event(command: ClientCommand, when: datetime) -> Event:
    """The fleet event of a command's outcome."""
    severity = "info" if command.state in ("completed", "cancelled") else "warning"
    details: dict[str, Any] = {
        "commandId": command.id, "action": command.action, "requestedBy": command.requested_by,
    }
    if command.error_code:
        details["errorCode"] = command.error_code
    return new_event(f"command_{command.state}", severity, when, command.client_uuid, **details)


# Issuing ---------------------------------------------------------------------------------


def issue_command(
    session: Session,
    now: datetime,
    policy: CommandPolicy,
    *,
    client_uuid: str,
    action: str,
    reason: str,
    requested_by: str,
    force: bool = False,
    dispatch_now: bool = True,
    group_id: int | None = None,
) -> ClientCommand:
    """Queue a command, or raise ActionNotSupported (the client cannot do it) or
    CommandLocked (naming the command that blocks it).

    The lockout is a compare-and-set on the client's `command_locks` row: the upsert only
    takes the row when the last power command is final and older than the lockout window.
    Concurrent requests serialise on that row (Postgres re-checks the condition against the
    winner's row; SQLite has one writer at a time), so exactly one of them wins. `force`
    (admin only, audited by the caller) skips the check but still takes the row.
    `dispatch_now`: the caller publishes at once; otherwise the scheduler's dispatcher does.
    `group_id`: issued through a group command; it is held until `release_group_commands`
    gives it its turn.
    """
    if action not in COMMAND_ACTIONS:
        expected = ", ".join(COMMAND_ACTIONS)
        raise CommandError(f"unknown action {action!r}; expected one of {expected}")
    client = session.get(Client, client_uuid)
    if client is None:
        raise UnknownClient(f"no client {client_uuid}")
    if not force:  # before the lockout: a refusal must not take the lock
        check_supported(client, action, policy.default_actions)
    command_id = str(uuid.uuid4())
    stmt = dialect_insert(session)(CommandLock).values(
        client_uuid=client_uuid, command_id=command_id, issued_at=now
    )
    # Not a correlated EXISTS: SQLAlchemy does not correlate inside ON CONFLICT, and the
    # subquery would then look at every client's lock row.
    blocker_open = CommandLock.command_id.in_(
        select(ClientCommand.id).where(ClientCommand.state.in_(OPEN_COMMAND_STATES))
    )
    cutoff = now - timedelta(seconds=policy.lockout_seconds)
    stmt = stmt.on_conflict_do_update(
        index_elements=[CommandLock.client_uuid],
        set_={"command_id": stmt.excluded.command_id, "issued_at": stmt.excluded.issued_at},
        where=None if force else and_(CommandLock.issued_at <= cutoff, ~blocker_open),
    ).returning(CommandLock.command_id)
    if session.execute(stmt).scalar_one_or_none() != command_id:
        raise _locked(session, now, policy, client_uuid)
    command = ClientCommand(
        id=command_id,
        client_uuid=client_uuid,
        action=action,
        state="queued",
        reason=reason,
        requested_by=requested_by,
        forced=force,
        issued_at=now,
        expires_at=now + timedelta(seconds=policy.expiry_seconds),
        completion_seconds=policy.completion_seconds[action],
        last_dispatch_at=now if dispatch_now and group_id is None else None,
        group_id=group_id,
        held=group_id is not None,
    )
    session.add(command)
    session.flush()  # the history row refers to the command
    session.add(_transition(command_id, "queued", now, "api" if dispatch_now else requested_by,
                            requestedBy=requested_by, forced=force))
    return command


def _locked(session: Session, now: datetime, policy: CommandPolicy,
            client_uuid: str) -> CommandLocked:
    lock = session.execute(
        select(CommandLock).where(CommandLock.client_uuid == client_uuid)
        .execution_options(populate_existing=True)
    ).scalar_one()
    blocking = session.get(ClientCommand, lock.command_id, populate_existing=True)
    assert blocking is not None  # the lock row is written with its command
    wait = (lock.issued_at - now).total_seconds() + policy.lockout_seconds
    if blocking.is_open:
        deadline = blocking.completion_due_at or blocking.expires_at
        wait = max(wait, (deadline - now).total_seconds())
    return CommandLocked(blocking, max(1, math.ceil(wait)))


def cancel_command(session: Session, now: datetime, command_id: str, by: str) -> ClientCommand:
    """Withdraw a command the broker has not taken yet (compare-and-set on `queued`)."""
    command = get_command(session, command_id)
    done = session.execute(
        update(ClientCommand)
        .where(ClientCommand.id == command_id, ClientCommand.state == "queued")
        .values(state="cancelled", finished_at=now)
    ).rowcount
    session.refresh(command)
    if not done:
        raise NotCancellable(command)
    session.add(_transition(command_id, "cancelled", now, "api", by=by))
    session.add(command_event(command, now))
    return command


def get_command(session: Session, command_id: str) -> ClientCommand:
    command = session.get(ClientCommand, command_id)
    if command is None:
        raise UnknownCommand(f"no command {command_id}")
    return command


def client_commands(
    session: Session, client_uuid: str, *, limit: int = 50, offset: int = 0
) -> tuple[list[ClientCommand], int]:
    """A client's commands, newest first, and how many it has in all."""
    if session.get(Client, client_uuid) is None:
        raise UnknownClient(f"no client {client_uuid}")
    where = ClientCommand.client_uuid == client_uuid
    total = session.scalar(select(func.count()).select_from(ClientCommand).where(where)) or 0
    rows = session.scalars(
        select(ClientCommand).where(where)
        .order_by(ClientCommand.issued_at.desc(), ClientCommand.id)
        .limit(limit).offset(offset)
    ).all()
    return list(rows), total


def history(session: Session, command_id: str) -> list[CommandTransition]:
    return list(session.scalars(
        select(CommandTransition).where(CommandTransition.command_id == command_id)
        .order_by(CommandTransition.id)
    ))


# Delivery --------------------------------------------------------------------------------


def command_payload(command: ClientCommand) -> dict[str, Any]:
    """The v1 command exactly as the deployed clients validate it: no extra keys."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command_id": command.id,
        "client_uuid": command.client_uuid,
        "action": command.action,
        "issued_at": iso_z(command.issued_at),
        "expires_at": iso_z(command.expires_at),
        "requested_by": command.requested_by,
        "reason": command.reason,
    }


def seconds_left(command: ClientCommand, now: datetime) -> int:
    """The MQTT 5 message expiry: whole seconds until expires_at (0 means: do not send)."""
    return max(0, math.floor((command.expires_at - now).total_seconds()))


def commands_to_dispatch(
    session: Session, now: datetime, *, retry_after: float, limit: int = 500
) -> list[ClientCommand]:
    """Queued, unexpired commands nobody tried to publish within `retry_after` seconds; they
    are claimed (last_dispatch_at = now) so that the next step does not take them again."""
    cutoff = now - timedelta(seconds=retry_after)
    due = session.scalars(
        select(ClientCommand)
        .where(
            ClientCommand.state == "queued",
            ClientCommand.held.is_(False),
            ClientCommand.expires_at > now,
            (ClientCommand.last_dispatch_at.is_(None)) | (ClientCommand.last_dispatch_at <= cutoff),
        )
        .order_by(ClientCommand.issued_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for command in due:
        command.last_dispatch_at = now
    return list(due)


def mark_sent(session: Session, command_id: str, at: datetime) -> bool:
    """The broker took the command (PUBACK). True when this moved it from queued to sent."""
    moved = session.execute(
        update(ClientCommand)
        .where(ClientCommand.id == command_id, ClientCommand.state == "queued")
        .values(state="sent", sent_at=at)
    ).rowcount
    if moved:
        session.add(_transition(command_id, "sent", at, "broker"))
        return True
    # An ack may have overtaken the PUBACK; the broker's time is still worth keeping.
    session.execute(
        update(ClientCommand)
        .where(ClientCommand.id == command_id, ClientCommand.sent_at.is_(None),
               ClientCommand.state.in_(OPEN_COMMAND_STATES))
        .values(sent_at=at)
    )
    return False


# Acks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    client_uuid: str
    command_id: str
    status: str
    at: datetime
    error_code: str | None = None
    error_message: str | None = None
    topic: str = ""


@dataclass
class AckResult:
    applied: int = 0
    ignored: int = 0  # duplicates and late acks: nothing to change
    unknown: list[Ack] = field(default_factory=list)


def apply_acks(session: Session, acks: Sequence[Ack]) -> AckResult:
    """Move commands forward by their acks, in arrival order. Acks for commands we do not
    know, or that belong to another client, are returned as `unknown` for counting."""
    result = AckResult()
    ids = list({a.command_id for a in acks})
    commands = {
        c.id: c
        for c in session.scalars(
            select(ClientCommand).where(ClientCommand.id.in_(ids)).with_for_update()
        )
    }
    for ack in acks:
        command = commands.get(ack.command_id)
        if command is None or command.client_uuid != ack.client_uuid:
            result.unknown.append(ack)
            continue
        if _apply_ack(session, command, ack):
            result.applied += 1
        else:
            result.ignored += 1
    return result


def _apply_ack(session: Session, command: ClientCommand, ack: Ack) -> bool:
    if rank(ack.status) <= rank(command.state):
        if ack.status in ("completed", "failed") and command.state != ack.status:
            log.info("command %s: late %s ack ignored, it is %s already",
                     command.id, ack.status, command.state,
                     extra=ids(client_uuid=command.client_uuid, command_id=command.id))
        return False
    if ack.status == "accepted":
        command.accepted_at = ack.at
    elif ack.status == "execution_started":
        command.execution_started_at = ack.at
    elif ack.status == "completed":
        command.completed_at = ack.at
    else:
        command.failed_at = ack.at
        command.error_code = ack.error_code
        command.error_message = ack.error_message
        learn_from_failure(session, command, ack.at)
    if command.completion_due_at is None:
        command.completion_due_at = ack.at + timedelta(seconds=command.completion_seconds)
    command.state = ack.status
    details = {"errorCode": ack.error_code} if ack.error_code else {}
    session.add(_transition(command.id, ack.status, ack.at, "device", **details))
    if rank(ack.status) == FINAL_RANK:
        command.finished_at = ack.at
        session.add(command_event(command, ack.at))
    return True


# The sweep -------------------------------------------------------------------------------


def sweep_expired_commands(session: Session, now: datetime) -> bool:
    """Expire what the device never accepted by expires_at, time out what it accepted but
    never finished within its completion window. Set-based, idempotent, safe to rerun after
    a restart. True when a full chunk was swept (more may be waiting)."""
    full = False
    rules = (
        # A held group command has not had its turn yet: its expiry starts when it gets it.
        ("expired",
         and_(ClientCommand.state.in_(("queued", "sent")), ClientCommand.held.is_(False)),
         ClientCommand.expires_at),
        ("timed_out", ClientCommand.state.in_(("accepted", "execution_started")),
         ClientCommand.completion_due_at),
    )
    for final, in_state, deadline in rules:
        chunk = (
            select(ClientCommand.id).where(in_state, deadline <= now).limit(SWEEP_CHUNK)
            .scalar_subquery()
        )
        rows = session.execute(
            update(ClientCommand)
            .where(ClientCommand.id.in_(chunk), in_state)
            .values(state=final, finished_at=now)
            .returning(ClientCommand.id, ClientCommand.client_uuid, ClientCommand.action,
                       ClientCommand.requested_by)
            .execution_options(synchronize_session=False)
        ).all()
        if not rows:
            continue
        full = full or len(rows) == SWEEP_CHUNK
        session.execute(insert(CommandTransition), [
            {"command_id": r.id, "state": final, "at": now, "source": "sweep", "details": None}
            for r in rows
        ])
        insert_events(session, f"command_{final}", "warning", now, (
            (r.client_uuid, {"commandId": r.id, "action": r.action, "requestedBy": r.requested_by})
            for r in rows
        ))
        log.info("sweep: %d commands %s", len(rows), final)
    return full


# Group commands ----------------------------------------------------------------------------


def release_group_commands(session: Session, now: datetime, policy: CommandPolicy,
                           group_id: int) -> list[ClientCommand]:
    """Give held commands of the group their turn, oldest first, while fewer than
    `group_max_parallel` of its commands run (open and not held). Each released command's
    expiry starts now. The group's row is locked, so two releasers never exceed the cap."""
    if session.get(Group, group_id, with_for_update=True) is None:
        return []
    of_group = ClientCommand.group_id == group_id
    running = session.scalar(
        select(func.count()).select_from(ClientCommand).where(
            of_group, ClientCommand.held.is_(False),
            ClientCommand.state.in_(OPEN_COMMAND_STATES))
    ) or 0
    free = policy.group_max_parallel - running
    if free <= 0:
        return []
    released = list(session.scalars(
        select(ClientCommand).where(of_group, ClientCommand.held.is_(True),
                                    ClientCommand.state == "queued")
        .order_by(ClientCommand.issued_at, ClientCommand.client_uuid).limit(free)
    ))
    for command in released:
        command.held = False
        command.expires_at = now + timedelta(seconds=policy.expiry_seconds)
        session.add(_transition(command.id, "queued", now, "group", released=True))
    return released


def groups_with_held_commands(session: Session) -> list[int]:
    return list(session.scalars(
        select(ClientCommand.group_id).where(ClientCommand.held.is_(True),
                                             ClientCommand.group_id.is_not(None)).distinct()
    ))

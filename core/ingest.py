"""Applying a batch of parsed device messages to the database, in one transaction.

The hot path (heartbeats and health from thousands of clients) is folded to one row per
client and written with set-based upserts; the rare kinds (service_failed, logs) are applied
one by one. Newer-wins guards keep the result right when several listeners share the load
and their batches commit out of order.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core import commands, contract
from core.activity import record_activity
from core.contract import Message, Rejection
from core.db import dialect_insert
from core.events import new_event
from core.logs import ids
from core.models import Client, ClientLog, Event, IngestRejection

log = logging.getLogger(__name__)

IN_LIST_CHUNK = 500  # SQLite: bound parameters per statement stay well under its limit
LIVE = "_live"  # marker in a folded row: some message of the batch was not a retained copy


@dataclass
class BatchResult:
    accepted: int = 0
    rejected: int = 0
    registered: int = 0
    acks: int = 0
    unknown_commands: int = 0  # valid acks naming no command of their client
    events: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)


def fold_client_rows(messages: Iterable[Message]) -> dict[str, dict[str, Any]]:
    """One upsert row per client: the latest value of each field group in the batch."""
    rows: dict[str, dict[str, Any]] = {}
    for m in messages:
        row = rows.setdefault(
            m.client_uuid,
            {"uuid": m.client_uuid, "first_seen_at": m.received_at, "last_seen_at": m.received_at,
             LIVE: False},
        )
        if m.is_sign_of_life:
            row["last_seen_at"] = m.received_at
            row[LIVE] = True
        p = m.payload
        if m.kind == contract.HEARTBEAT:
            row["last_heartbeat_at"] = m.received_at
        elif m.kind == contract.DISCOVERY:
            hardware = {"description": p.hardware} if isinstance(p.hardware, str) else p.hardware
            row.update(
                hostname=p.hostname,
                ip=p.ip,
                software_version=p.software_version,
                hardware=hardware,
                reported_group_id=p.group_id,
                reported_capabilities=p.known_capabilities(),
                last_discovery_at=m.received_at,
            )
        elif m.kind == contract.HEALTH:
            row.update(health=m.raw, health_at=m.received_at)
            process_status = p.reported_process_status()
            if process_status is not None:  # none found: the status stays as it was
                row.update(process_status=process_status, process_status_at=m.received_at)
            if p.broker_connection is not None:
                row.update(
                    mqtt_reconnect_count=p.broker_connection.reconnect_count,
                    mqtt_last_disconnect_at=p.broker_connection.last_disconnect_at,
                )
        elif m.kind == contract.POWER_STATE:
            row.update(power_state=power_document(p), power_state_at=m.received_at)
        elif m.kind == contract.STATUS:
            held = row.get("presence_session")
            if held is None or p.session is None or p.session >= held:
                row.update(
                    presence=p.status,
                    presence_session=p.session if p.session is not None else held,
                    presence_at=m.received_at,
                )
    return rows


def power_document(p: contract.PowerStatePayload) -> dict[str, Any]:
    """The TV power report as the API shows it."""
    return {
        "appliedState": p.power.applied_state, "source": p.power.source,
        "result": p.power.result, "detail": p.power.detail, "intentId": p.intent_id,
        "reportedAt": p.reported_at.isoformat() if p.reported_at else None,
    }


# Columns updated together, and the column that says which version is newer. A row carries
# only the columns its messages set (a health report without a process status keeps it).
_GUARDED_GROUPS = {
    "last_discovery_at": (
        "hostname", "ip", "software_version", "hardware", "reported_group_id",
        "reported_capabilities", "last_discovery_at",
    ),
    "health_at": ("process_status", "process_status_at", "health", "health_at"),
    "power_state_at": ("power_state", "power_state_at"),
}
_RECONNECT_COLUMNS = ("mqtt_reconnect_count", "mqtt_last_disconnect_at")


def _later(current: ColumnElement[Any], new: ColumnElement[Any], dialect: str) -> Any:
    # SQLite's two-argument max() is a scalar function, but NULL wins it: coalesce first.
    if dialect == "postgresql":
        return func.greatest(current, new)
    return func.max(func.coalesce(current, new), new)


def _conflict_updates(new: Any, keys: frozenset[str], live: bool, dialect: str) -> dict[str, Any]:
    """SET clause of the upsert: `new` is the proposed row (EXCLUDED), guarded newer-wins."""
    table = Client.__table__
    updates: dict[str, Any] = {}
    for name in ("last_seen_at", "last_heartbeat_at"):
        if name in keys and (live or name != "last_seen_at"):
            updates[name] = _later(table.c[name], new[name], dialect)
    for guard, columns in _GUARDED_GROUPS.items():
        if guard in keys:
            newer = or_(table.c[guard].is_(None), new[guard] >= table.c[guard])
            if guard == "health_at" and "mqtt_reconnect_count" in keys:
                columns = columns + _RECONNECT_COLUMNS
            for name in columns:
                if name in keys:
                    updates[name] = case((newer, new[name]), else_=table.c[name])
    if "presence" in keys:
        newer = or_(
            table.c.presence_session.is_(None),
            new.presence_session.is_(None),
            new.presence_session >= table.c.presence_session,
        )
        for name in ("presence", "presence_at"):
            updates[name] = case((newer, new[name]), else_=table.c[name])
        # A report without a session keeps the session we know.
        updates["presence_session"] = case(
            (newer, func.coalesce(new.presence_session, table.c.presence_session)),
            else_=table.c.presence_session,
        )
    return updates


def _on_conflict(stmt: Any, updates: dict[str, Any]) -> Any:
    # Rows that only register the client (a retained copy of a known client carries no field
    # to update) insert or do nothing: an empty SET is invalid SQL and would fail the batch.
    if not updates:
        return stmt.on_conflict_do_nothing(index_elements=["uuid"])
    return stmt.on_conflict_do_update(index_elements=["uuid"], set_=updates)


def _upsert_clients(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """One upsert per group of rows that carry the same fields."""
    dialect = session.get_bind().dialect.name
    table = Client.__table__
    groups: dict[tuple[frozenset[str], bool], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        live = row.pop(LIVE, True)
        groups[(frozenset(row), live)].append(row)
    for (keys, live), group in groups.items():
        if dialect == "postgresql":
            _copy_upsert(session, keys, live, group)
            continue
        stmt = sqlite.insert(table)
        updates = _conflict_updates(stmt.excluded, keys, live, dialect)
        session.execute(_on_conflict(stmt, updates), group)


# Postgres: the rows are streamed with COPY into a temporary table and upserted from there in
# one statement. Per row that is one C-level write instead of Python parameter handling, which
# matters because the listener's writer shares the interpreter with paho's network thread.
_STAGING = Table(
    "ingest_client_rows",
    MetaData(),
    *(Column(c.name, c.type) for c in Client.__table__.columns),
    prefixes=["TEMPORARY"],
)
_CREATE_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS ingest_client_rows "
    "(LIKE clients INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_JSON_COLUMNS = frozenset({"hardware", "health", "reported_capabilities", "power_state"})


def _copy_upsert(session: Session, keys: frozenset[str], live: bool,
                 group: list[dict[str, Any]]) -> None:
    from psycopg.types.json import Jsonb  # only on Postgres, where psycopg is the driver

    columns = sorted(keys)
    connection = session.connection()
    connection.exec_driver_sql(_CREATE_STAGING)
    connection.exec_driver_sql("TRUNCATE ingest_client_rows")
    cursor = connection.connection.driver_connection.cursor()
    json_at = [i for i, name in enumerate(columns) if name in _JSON_COLUMNS]
    with cursor.copy(f"COPY ingest_client_rows ({', '.join(columns)}) FROM STDIN") as copy:
        for row in group:
            values = [row[name] for name in columns]
            for i in json_at:
                if values[i] is not None:
                    values[i] = Jsonb(values[i])
            copy.write_row(values)
    stmt = postgresql.insert(Client.__table__).from_select(
        columns, select(*(_STAGING.c[name] for name in columns))
    )
    updates = _conflict_updates(stmt.excluded, keys, live, "postgresql")
    session.execute(_on_conflict(stmt, updates))


def tv_power_errors(messages: Iterable[Message]) -> list[Event]:
    """One `tv_power_error` per failed power change (a repeat of the same report in one batch
    counts once)."""
    seen: set[tuple[str, str | None]] = set()
    events = []
    for m in messages:
        if m.kind != contract.POWER_STATE or m.payload.power.result != "error":
            continue
        key = (m.client_uuid, m.payload.intent_id)
        if key in seen:
            continue
        seen.add(key)
        events.append(new_event("tv_power_error", "warning", m.received_at, m.client_uuid,
                                **power_document(m.payload)))
    return events


def _known_uuids(session: Session, uuids: list[str]) -> set[str]:
    if session.get_bind().dialect.name == "postgresql":
        # One array parameter: a long IN list gets a generic plan that scans the table once
        # the driver has prepared the statement.
        ids = bindparam("ids", uuids, type_=postgresql.ARRAY(String))
        return set(session.scalars(select(Client.uuid).where(Client.uuid == any_(ids))))
    known: set[str] = set()
    for start in range(0, len(uuids), IN_LIST_CHUNK):
        chunk = uuids[start : start + IN_LIST_CHUNK]
        known.update(session.scalars(select(Client.uuid).where(Client.uuid.in_(chunk))))
    return known


def _apply_service_failed(session: Session, m: Message) -> Event | None:
    client = session.get(Client, m.client_uuid)
    assert client is not None  # the upsert ran first
    p = m.payload
    if p is None:  # the device cleared it (empty retained payload)
        if client.service_failed_at is None:
            return None
        was_open = client.service_failed_open
        unit = client.service_failed_unit
        for name in (
            "service_failed_at", "service_failed_unit", "service_failed_exit_code",
            "service_failed_message", "service_failed_received_at",
            "service_failed_acknowledged_at", "service_failed_acknowledged_by",
        ):
            setattr(client, name, None)
        if not was_open:
            return None
        return new_event("service_failed_cleared", "info", m.received_at, m.client_uuid, unit=unit)
    if client.service_failed_at == p.failed_at and client.service_failed_unit == p.unit:
        # The same report again: a retained copy after a reconnect, or a duplicate. An alert
        # that staff acknowledged stays acknowledged.
        return None
    if client.service_failed_at is not None and p.failed_at < client.service_failed_at:
        return None  # an older report arriving late (another listener, a redelivery)
    client.service_failed_at = p.failed_at
    client.service_failed_unit = p.unit
    client.service_failed_exit_code = p.exit_code
    client.service_failed_message = p.message
    client.service_failed_received_at = m.received_at
    client.service_failed_acknowledged_at = None
    client.service_failed_acknowledged_by = None
    return new_event(
        "service_failed", "error", m.received_at, m.client_uuid,
        unit=p.unit, failed_at=p.failed_at.isoformat(), exit_code=p.exit_code,
        message=p.message,
    )


def _insert_logs(session: Session, logs: Sequence[Message], cap: int) -> None:
    session.add_all(
        ClientLog(
            client_uuid=m.client_uuid,
            level=m.log_level,
            logged_at=m.payload.timestamp,
            received_at=m.received_at,
            message=m.payload.message,
            context=m.payload.context,
        )
        for m in logs
    )
    session.flush()
    for client_uuid in {m.client_uuid for m in logs}:
        oldest_kept = (
            select(ClientLog.id)
            .where(ClientLog.client_uuid == client_uuid)
            .order_by(ClientLog.id.desc())
            .offset(cap - 1)
            .limit(1)
            .scalar_subquery()
        )
        session.execute(
            delete(ClientLog).where(
                and_(ClientLog.client_uuid == client_uuid, ClientLog.id < oldest_kept)
            )
        )


def _apply_acks(session: Session, messages: Sequence[Message], result: BatchResult
                ) -> list[Rejection]:
    """Move commands forward; acks naming a command we do not know are counted as rejections
    (the message itself was valid, so it stays in `accepted`)."""
    outcome = commands.apply_acks(session, [
        commands.Ack(
            client_uuid=m.client_uuid, command_id=m.payload.command_id, status=m.payload.status,
            at=m.received_at, error_code=m.payload.error_code,
            error_message=m.payload.error_message, topic=m.topic,
        )
        for m in messages
    ])
    result.acks = outcome.applied
    unknown = outcome.unknown
    result.unknown_commands = len(unknown)
    for ack in unknown:
        log.warning("ack %s from client %s names an unknown command %s",
                    ack.status, ack.client_uuid, ack.command_id,
                    extra=ids(client_uuid=ack.client_uuid, command_id=ack.command_id))
    return [
        Rejection(contract.UNKNOWN_COMMAND, a.topic, f"no command {a.command_id} of this client",
                  a.status)
        for a in unknown
    ]


def count_rejections(session: Session, rejections: Sequence[Rejection], now: datetime) -> None:
    by_reason: dict[str, list[Rejection]] = defaultdict(list)
    for r in rejections:
        by_reason[r.reason].append(r)
    insert = dialect_insert(session)
    for reason, items in by_reason.items():
        last = items[-1]
        detail = f"{last.detail} | {last.excerpt}"[:300]
        stmt = insert(IngestRejection).values(
            reason=reason, count=len(items), first_at=now, last_at=now,
            last_topic=last.topic, last_detail=detail,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[IngestRejection.reason],
            set_={
                "count": IngestRejection.count + stmt.excluded["count"],
                "last_at": stmt.excluded.last_at,
                "last_topic": stmt.excluded.last_topic,
                "last_detail": stmt.excluded.last_detail,
            },
        )
        session.execute(stmt)


def apply_batch(
    session: Session,
    items: Sequence[Message | Rejection],
    *,
    now: datetime,
    log_cap: int = 1000,
) -> BatchResult:
    """Write one batch. The caller owns the transaction (commit or rollback)."""
    result = BatchResult()
    messages = [m for m in items if isinstance(m, Message)]
    rejections = [r for r in items if isinstance(r, Rejection)]
    result.accepted, result.rejected = len(messages), len(rejections)
    result.by_kind.update(m.kind for m in messages)

    rows = fold_client_rows(messages)
    if rows:
        known = _known_uuids(session, list(rows))
        events = [
            new_event("client_registered", "info", row["first_seen_at"], uuid)
            for uuid, row in rows.items()
            if uuid not in known
        ]
        _upsert_clients(session, list(rows.values()))
        record_activity(session, messages)
        result.registered = len(events)
        for m in messages:
            if m.kind == contract.SERVICE_FAILED:
                event = _apply_service_failed(session, m)
                if event is not None:
                    events.append(event)
        events += tv_power_errors(messages)
        session.add_all(events)
        result.events = len(events)
    logs = [m for m in messages if m.kind == contract.LOG]
    if logs:
        _insert_logs(session, logs, log_cap)
    acks = [m for m in messages if m.kind == contract.COMMAND_ACK]
    if acks:
        rejections = rejections + _apply_acks(session, acks, result)
        rejections += [
            Rejection(contract.TEXT_TRUNCATED, m.topic, "error_code or error_message cut to "
                      f"{contract.ACK_ERROR_CODE_MAX}/{contract.ACK_ERROR_MESSAGE_MAX} characters",
                      m.payload.command_id)
            for m in acks if m.truncated
        ]
    if rejections:
        count_rejections(session, rejections, now)
    return result

"""Typed SQLAlchemy 2 models. Every schema change comes with an Alembic migration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core import contract
from core.clock import as_utc

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back timezone-aware UTC datetimes, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite has no time zones: store naive UTC so that text comparisons order correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


JSONDocument = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONDocument}


class Group(Base):
    """Screens staff put together (a building, a floor). The server is the source of truth:
    each member learns its group from the retained `group_id` topic."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(String(500))
    # An admin's setting for every member without one of its own (None: not set).
    supported_actions: Mapped[list[str] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime]


class Client(Base):
    """One infoscreen, keyed by the uuid it uses as MQTT identity and topic segment."""

    __tablename__ = "clients"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    hostname: Mapped[str | None] = mapped_column(String(255))
    ip: Mapped[str | None] = mapped_column(String(45))
    software_version: Mapped[str | None] = mapped_column(String(64))
    hardware: Mapped[dict[str, Any] | None]
    # What the device said in discovery; never overrides staff's `group_id`.
    reported_group_id: Mapped[str | None] = mapped_column(String(64))
    group_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("groups.id", ondelete="SET NULL"), index=True
    )
    # The retained group_id at the broker does not match group_id yet (an outbox), and when a
    # publisher last tried to bring it there.
    group_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    group_dispatch_at: Mapped[datetime | None]
    group: Mapped[Group | None] = relationship(lazy="selectin")
    # Capabilities (core.capabilities): an admin's setting, the discovery's list, and actions
    # a failed ack showed the device cannot do.
    supported_actions: Mapped[list[str] | None] = mapped_column(JSONDocument)
    reported_capabilities: Mapped[list[str] | None] = mapped_column(JSONDocument)
    unsupported_actions: Mapped[list[str] | None] = mapped_column(JSONDocument)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(index=True)
    last_heartbeat_at: Mapped[datetime | None]
    last_discovery_at: Mapped[datetime | None]

    process_status: Mapped[str | None] = mapped_column(String(16))
    process_status_at: Mapped[datetime | None]
    health: Mapped[dict[str, Any] | None]
    health_at: Mapped[datetime | None]
    mqtt_reconnect_count: Mapped[int | None] = mapped_column(BigInteger)
    mqtt_last_disconnect_at: Mapped[datetime | None]

    # The TV's last reported power (power/state), as sent; power_state_at is when it came.
    power_state: Mapped[dict[str, Any] | None]
    power_state_at: Mapped[datetime | None]

    # The dashboard's runtime blocks (system_info, process_health) as last sent.
    runtime: Mapped[dict[str, Any] | None]
    runtime_at: Mapped[datetime | None]
    # What the screen shows, kept by the screenshot path: since when it is black, and since
    # when its picture has not changed (a fingerprint), and whether that was reported.
    screen_black_since: Mapped[datetime | None]
    screen_fingerprint: Mapped[str | None] = mapped_column(String(32))
    screen_fingerprint_since: Mapped[datetime | None]
    screen_frozen_reported: Mapped[bool] = mapped_column(Boolean, default=False,
                                                         server_default=false())

    presence: Mapped[str | None] = mapped_column(String(8))
    presence_session: Mapped[int | None] = mapped_column(BigInteger)
    presence_at: Mapped[datetime | None]

    # The last service-failed report. The alert is open while it is not acknowledged.
    service_failed_at: Mapped[datetime | None]
    service_failed_unit: Mapped[str | None] = mapped_column(String(255))
    service_failed_exit_code: Mapped[int | None]
    service_failed_message: Mapped[str | None] = mapped_column(Text)
    service_failed_received_at: Mapped[datetime | None]
    service_failed_acknowledged_at: Mapped[datetime | None]
    service_failed_acknowledged_by: Mapped[str | None] = mapped_column(String(128))

    # Kept by the scheduler: the liveness it last saw (alive, stale, down) and since when,
    # when it reported the current crash, and what it last published for monitors.
    liveness: Mapped[str | None] = mapped_column(String(8))
    liveness_changed_at: Mapped[datetime | None]
    crash_reported_at: Mapped[datetime | None]
    monitor_signature: Mapped[str | None] = mapped_column(Text)

    @property
    def service_failed_open(self) -> bool:
        return self.service_failed_at is not None and self.service_failed_acknowledged_at is None


class ClientLog(Base):
    __tablename__ = "client_logs"
    __table_args__ = (Index("ix_client_logs_client_uuid_id", "client_uuid", "id"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    client_uuid: Mapped[str] = mapped_column(
        String(36), ForeignKey("clients.uuid", ondelete="CASCADE")
    )
    level: Mapped[str] = mapped_column(String(8))
    logged_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    message: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any] | None]


class Screenshot(Base):
    """One capture of what a screen showed. The picture and its thumbnail are files under
    SCREENSHOT_DIR (core.screenshot_store); a row and its files are written and removed
    together, and a reconciliation removes either one left alone by a crash."""

    __tablename__ = "screenshots"
    __table_args__ = (
        Index("ix_screenshots_client_uuid_id", "client_uuid", "id"),
        CheckConstraint("type IN ('periodic', 'event_start', 'event_stop')", name="type"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    client_uuid: Mapped[str] = mapped_column(
        String(36), ForeignKey("clients.uuid", ondelete="CASCADE")
    )
    captured_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(index=True)
    type: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))  # dashboard, screenshot (legacy)
    format: Mapped[str] = mapped_column(String(8))  # jpeg, png
    bytes: Mapped[int] = mapped_column(Integer)
    thumb_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    black: Mapped[bool] = mapped_column(Boolean)
    file: Mapped[str] = mapped_column(String(128))  # relative to SCREENSHOT_DIR


class ClientActivity(Base):
    """Live messages of one client in one time bucket (core.activity.BUCKET), written by the
    listener, pruned by the scheduler: the history behind the client page's timeline."""

    __tablename__ = "client_activity"

    client_uuid: Mapped[str] = mapped_column(
        String(36), ForeignKey("clients.uuid", ondelete="CASCADE"), primary_key=True
    )
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True, index=True)
    heartbeats: Mapped[int]
    messages: Mapped[int]


class Event(Base):
    """A fleet event. Written in the same transaction as the state change (an outbox):
    `delivered_at` stays empty until a delivery step has published it."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_client_uuid_occurred_at", "client_uuid", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(48))
    severity: Mapped[str] = mapped_column(String(16))
    client_uuid: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("clients.uuid", ondelete="SET NULL")
    )
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    details: Mapped[dict[str, Any] | None]
    delivered_at: Mapped[datetime | None] = mapped_column(index=True)
    # The notifications' own cursor over the same outbox: empty until they have planned it.
    notified_at: Mapped[datetime | None] = mapped_column(index=True)


class IngestRejection(Base):
    """How many device messages the listener refused, per reason, since the database was made."""

    __tablename__ = "ingest_rejections"

    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    last_topic: Mapped[str] = mapped_column(String(255))
    last_detail: Mapped[str] = mapped_column(String(300))


ROLES = ("viewer", "operator", "admin")  # each role may do what the ones before it may


class User(Base):
    """A member of staff who signs in to the web app."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    # In the session cookie; bumped on sign-out, password or role change and disable, so that
    # every session signed in before ends at once.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RateLimitCounter(Base):
    """A fixed-window counter of the sign-in limits, shared by every web worker."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime]


class ApiToken(Base):
    """A bearer token for scripts. Only a hash of its secret is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public part of the token
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Who did what and when: every acknowledgement, command and account change."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any] | None]


# Command states (DESIGN.md §5). Open states may still move; the rest are final.
OPEN_COMMAND_STATES = ("queued", "sent", "accepted", "execution_started")
COMMAND_ACTIONS = contract.COMMAND_ACTIONS
_OPEN_SQL = "state IN ('queued', 'sent', 'accepted', 'execution_started')"


class ClientCommand(Base):
    """A command to one client; its id is the `command_id` the device acks with."""

    __tablename__ = "client_commands"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'sent', 'accepted', 'execution_started', 'completed', "
            "'failed', 'expired', 'timed_out', 'cancelled')",
            name="state",
        ),
        CheckConstraint(
            "action IN ('reboot_host', 'shutdown_host', 'restart_app')", name="action"
        ),
        Index("ix_client_commands_client_uuid_issued_at", "client_uuid", "issued_at"),
        # The sweep and the dispatcher only ever look at open commands: a small partial index
        # keeps them fast however much history there is.
        Index(
            "ix_client_commands_open",
            "state",
            "expires_at",
            postgresql_where=text(_OPEN_SQL),
            sqlite_where=text(_OPEN_SQL),
        ),
        Index("ix_client_commands_requested_by_issued_at", "requested_by", "issued_at"),
        # Group commands waiting for their turn: few, looked at every scheduler cycle.
        Index("ix_client_commands_held", "group_id", postgresql_where=text("held"),
              sqlite_where=text("held")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_uuid: Mapped[str] = mapped_column(
        String(36), ForeignKey("clients.uuid", ondelete="CASCADE")
    )
    action: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500))
    requested_by: Mapped[str] = mapped_column(String(128))
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # Once the device accepts, it has `completion_seconds` to report an outcome (the
    # completion window of the action when it was issued), or the command times out.
    completion_seconds: Mapped[int]
    completion_due_at: Mapped[datetime | None]
    last_dispatch_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    accepted_at: Mapped[datetime | None]
    execution_started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None] = mapped_column(index=True)
    error_code: Mapped[str | None] = mapped_column(String(128))
    # Issued through a group command: at most GROUP_COMMAND_MAX_PARALLEL of a group run at
    # once; a held command waits (queued) for its turn and is not published until released.
    group_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("groups.id", ondelete="SET NULL")
    )
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error_message: Mapped[str | None] = mapped_column(Text)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_COMMAND_STATES


class CommandTransition(Base):
    """Every state a command took, when, and who moved it (api, broker, device, sweep...)."""

    __tablename__ = "client_command_history"
    __table_args__ = (Index("ix_client_command_history_command_id_id", "command_id", "id"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("client_commands.id", ondelete="CASCADE")
    )
    state: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any] | None]


class CommandLock(Base):
    """Per client: the last power command and when it was issued. Issuing a command is a
    compare-and-set on this row, so two workers (or the API and auto-recovery) never both win."""

    __tablename__ = "command_locks"

    client_uuid: Mapped[str] = mapped_column(
        String(36), ForeignKey("clients.uuid", ondelete="CASCADE"), primary_key=True
    )
    command_id: Mapped[str] = mapped_column(String(36))
    issued_at: Mapped[datetime]


class SchedulerState(Base):
    """Small named values the scheduler keeps across restarts and between schedulers, such as
    when the certificates were last checked."""

    __tablename__ = "scheduler_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime]


class NotificationChannel(Base):
    """Where notifications go: an Apprise URL, encrypted (it holds tokens and passwords), with
    a redacted form to show. `source` env: declared in NOTIFY_URLS (kept in step with it at
    start-up); admin: made in the panel or the API."""

    __tablename__ = "notification_channels"
    __table_args__ = (CheckConstraint("source IN ('env', 'admin')", name="source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url_encrypted: Mapped[str] = mapped_column(Text)
    url_redacted: Mapped[str] = mapped_column(String(255))
    # sha256 of the URL keyed with the secret: finds a NOTIFY_URLS entry again, shows nothing.
    url_digest: Mapped[str] = mapped_column(String(64), index=True)
    tags: Mapped[list[str]] = mapped_column(JSONDocument)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    source: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class NotificationRule(Base):
    """Which events go to which channels: event types (empty: any), a lowest severity, the
    channels (empty: every enabled one), and optionally one group's screens only."""

    __tablename__ = "notification_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_types: Mapped[list[str]] = mapped_column(JSONDocument)
    min_severity: Mapped[str] = mapped_column(String(16))
    channel_ids: Mapped[list[int]] = mapped_column(JSONDocument)
    group_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("groups.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]


class Notification(Base):
    """One message to one channel, and the log of its delivery. `kind`: alert, resolution,
    reminder, escalation, digest, quiet_summary or test. `state`: pending (to send at
    next_attempt_at), held (quiet hours), sent, failed, or folded (sent inside the digest or
    summary `folded_into`)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_channel_state", "channel_id", "state"),
        Index("ix_notifications_client_type", "client_uuid", "event_type"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    channel_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("notification_channels.id", ondelete="SET NULL"))
    channel_shown: Mapped[str] = mapped_column(String(255))  # redacted, kept for the log
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    client_uuid: Mapped[str | None] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(48))
    severity: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(8), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500))
    folded_into: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(index=True)
    next_attempt_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]

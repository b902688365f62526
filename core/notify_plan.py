"""From fleet events to notifications: rules, cooldown, resolutions, reminders, escalation,
quiet hours and storm digests. Every decision reads the clock it is given.

The events table is an outbox (core.events); `events.notified_at` is this module's cursor
over it, apart from the monitor topics' `delivered_at`. Planning writes `notifications` rows
(pending, or held during quiet hours) in the same transaction that moves the cursor, so an
event is planned exactly once; sending (scheduler.notifications) then delivers each row at
least once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.config import Settings
from core.models import Client, Event, Group, Notification, NotificationChannel, NotificationRule
from core.notify_channels import ESCALATION, in_quiet_hours, parse_quiet_hours
from core.notify_messages import Wording

SEVERITIES = ("info", "warning", "error", "critical")
DEFAULT_EVENT_TYPES = (
    "service_failed", "client_down", "crash_detected", "auto_recovery_exhausted",
    "auto_recovery_braked", "command_failed", "command_timed_out", "screen_black",
    "certificate_expiring", "certificate_expired", "broker_auth_failures",
)
# A resolution goes where the alert it resolves went.
RESOLVES = {
    "client_recovered": ("client_down",),
    "service_failed_acknowledged": ("service_failed",),
    "service_failed_cleared": ("service_failed",),
    "crash_cleared": ("crash_detected",),
    "screen_recovered": ("screen_black", "screen_frozen"),
    "auto_recovery_resumed": ("auto_recovery_braked",),
}
ALERT, RESOLUTION, REMINDER, ESCALATION_KIND = "alert", "resolution", "reminder", "escalation"
DIGEST, QUIET_SUMMARY, TEST = "digest", "quiet_summary", "test"
PENDING, HELD, SENT, FAILED, FOLDED = "pending", "held", "sent", "failed", "folded"
DELIVERED_OR_DUE = (PENDING, HELD, SENT, FOLDED)
BATCH = 200


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


@dataclass(frozen=True)
class Rule:
    event_types: frozenset[str]  # empty: any
    min_severity: str
    channel_ids: frozenset[int]  # empty: every enabled channel
    group_id: int | None

    def matches(self, event: Event, group_id: int | None) -> bool:
        return ((not self.event_types or event.type in self.event_types)
                and severity_rank(event.severity) >= severity_rank(self.min_severity)
                and (self.group_id is None or self.group_id == group_id))


DEFAULT_RULE = Rule(frozenset(DEFAULT_EVENT_TYPES), "info", frozenset(), None)


@dataclass(frozen=True)
class Policy:
    cooldown: timedelta
    reminder: timedelta | None
    escalate_after: timedelta | None
    quiet: tuple[time, time] | None
    timezone: ZoneInfo
    digest_threshold: int
    digest_window: timedelta
    max_attempts: int
    wording: Wording

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        seconds = timedelta(seconds=1)
        return cls(
            cooldown=settings.notify_cooldown_seconds * seconds,
            reminder=settings.notify_reminder_seconds * seconds
            if settings.notify_reminder_seconds else None,
            escalate_after=settings.notify_escalate_after_seconds * seconds
            if settings.notify_escalate_after_seconds else None,
            quiet=parse_quiet_hours(settings.notify_quiet_hours),
            timezone=ZoneInfo(settings.notify_timezone),
            digest_threshold=settings.notify_digest_threshold,
            digest_window=settings.notify_digest_window_seconds * seconds,
            max_attempts=settings.notify_max_attempts,
            wording=Wording(settings.notify_language, settings.notify_timezone,
                            settings.public_url),
        )

    def quiet_now(self, now: datetime) -> bool:
        return in_quiet_hours(self.quiet, now.astimezone(self.timezone).time())


def load_rules(session: Session) -> list[Rule]:
    rows = session.scalars(select(NotificationRule).order_by(NotificationRule.id)).all()
    if not rows:
        return [DEFAULT_RULE]
    return [Rule(frozenset(r.event_types), r.min_severity, frozenset(r.channel_ids), r.group_id)
            for r in rows]


def _row(channel: NotificationChannel, kind: str, now: datetime, *, title: str, body: str,
         event_type: str, severity: str, client_uuid: str | None, event_id: int | None = None,
         held: bool = False) -> Notification:
    return Notification(channel_id=channel.id, channel_shown=channel.url_redacted,
                        event_id=event_id, client_uuid=client_uuid, event_type=event_type,
                        severity=severity, kind=kind, title=title, body=body,
                        state=HELD if held else PENDING, attempts=0, created_at=now,
                        next_attempt_at=now)


# Planning ---------------------------------------------------------------------------------


def plan_events(session: Session, now: datetime, policy: Policy) -> bool:
    """Plan the next batch of unplanned events; True when more are waiting."""
    events = session.scalars(select(Event).where(Event.notified_at.is_(None))
                             .order_by(Event.id).limit(BATCH)).all()
    if not events:
        return False
    session.execute(update(Event).where(Event.id.in_([e.id for e in events]))
                    .values(notified_at=now))
    channels = {c.id: c for c in session.scalars(
        select(NotificationChannel).where(NotificationChannel.enabled.is_(True)))}
    if channels:
        rules = load_rules(session)
        clients = _clients(session, {e.client_uuid for e in events if e.client_uuid})
        quiet = policy.quiet_now(now)
        for event in events:
            client = clients.get(event.client_uuid) if event.client_uuid else None
            session.add_all(_plan_one(session, event, client, channels, rules, policy, now,
                                      quiet))
            session.flush()  # the next event's cooldown sees this one's rows
    return len(events) == BATCH


def _clients(session: Session, uuids: set[str]) -> dict[str, tuple[Client, str | None]]:
    if not uuids:
        return {}
    rows = session.execute(select(Client, Group.name).outerjoin(Group, Client.group_id == Group.id)
                           .where(Client.uuid.in_(uuids))).all()
    return {client.uuid: (client, group) for client, group in rows}


def _plan_one(session: Session, event: Event, client: tuple[Client, str | None] | None,
              channels: dict[int, NotificationChannel], rules: Sequence[Rule], policy: Policy,
              now: datetime, quiet: bool) -> list[Notification]:
    screen = group = None
    group_id = None
    if client is not None:
        screen = client[0].hostname or client[0].uuid
        group, group_id = client[1], client[0].group_id
    elif event.client_uuid:
        screen = event.client_uuid
    title, body = policy.wording.event(event.type, event.severity, event.occurred_at,
                                       event.details or {}, screen, group, event.client_uuid)
    if event.type in RESOLVES:
        targets = _alerted(session, event.client_uuid, RESOLVES[event.type], channels)
        kind = RESOLUTION
    else:
        wanted: set[int] = set()
        for rule in rules:
            if rule.matches(event, group_id):
                wanted |= set(rule.channel_ids or channels)
        targets = [channels[i] for i in sorted(wanted) if i in channels
                   and not _cooling_down(session, i, event, now, policy.cooldown)]
        kind = ALERT
    held = quiet and severity_rank(event.severity) < severity_rank("error")
    return [_row(channel, kind, now, title=title, body=body, event_type=event.type,
                 severity=event.severity, client_uuid=event.client_uuid, event_id=event.id,
                 held=held) for channel in targets]


def _cooling_down(session: Session, channel_id: int, event: Event, now: datetime,
                  cooldown: timedelta) -> bool:
    if not cooldown:
        return False
    return session.scalar(select(func.count()).select_from(Notification).where(
        Notification.channel_id == channel_id, Notification.kind == ALERT,
        Notification.event_type == event.type,
        Notification.client_uuid.is_(None) if event.client_uuid is None
        else Notification.client_uuid == event.client_uuid,
        Notification.state.in_(DELIVERED_OR_DUE),
        Notification.created_at > now - cooldown)) > 0


def _alerted(session: Session, client_uuid: str | None, alert_types: Iterable[str],
             channels: dict[int, NotificationChannel]) -> list[NotificationChannel]:
    """The channels whose latest word on these alerts for this screen was an alert that went
    (or will go) out, not yet resolved."""
    rows = session.execute(
        select(Notification.channel_id, Notification.kind, Notification.state)
        .where(Notification.client_uuid.is_(None) if client_uuid is None
               else Notification.client_uuid == client_uuid,
               Notification.event_type.in_([*alert_types, *_resolutions_of(alert_types)]),
               Notification.kind.in_((ALERT, RESOLUTION)))
        .order_by(Notification.id.desc())).all()
    latest: dict[int, tuple[str, str]] = {}
    for channel_id, kind, state in rows:
        if channel_id is not None:
            latest.setdefault(channel_id, (kind, state))
    return [channels[i] for i, (kind, state) in sorted(latest.items())
            if i in channels and kind == ALERT and state in DELIVERED_OR_DUE]


def _resolutions_of(alert_types: Iterable[str]) -> list[str]:
    alerts = set(alert_types)
    return [r for r, resolved in RESOLVES.items() if alerts & set(resolved)]


# Reminders and escalation -------------------------------------------------------------------


def follow_up_alerts(session: Session, now: datetime, policy: Policy) -> int:
    """Reminders of service-failed alerts nobody acknowledged, and their escalation to the
    channels tagged `escalation`. Returns how many notifications it wrote."""
    if policy.reminder is None and policy.escalate_after is None:
        return 0
    open_alerts = session.scalars(select(Client).where(
        Client.service_failed_at.is_not(None),
        Client.service_failed_acknowledged_at.is_(None))).all()
    if not open_alerts:
        return 0
    channels = {c.id: c for c in session.scalars(
        select(NotificationChannel).where(NotificationChannel.enabled.is_(True)))}
    written = 0
    for client in open_alerts:
        since = client.service_failed_at
        # Every state counts for the timing: a reminder that failed is not sent again at once.
        said = session.scalars(select(Notification).where(
            Notification.client_uuid == client.uuid, Notification.event_type == "service_failed",
            Notification.created_at >= since).order_by(Notification.id)).all()
        alerts = [n for n in said if n.kind == ALERT and n.state in DELIVERED_OR_DUE]
        if not alerts:
            continue  # never notified (no rule, or a cooldown): nothing to remind of
        first = alerts[0]
        age = (now - since).total_seconds()
        if policy.reminder is not None:
            last_by_channel: dict[int, Notification] = {}
            for n in said:
                if n.kind in (ALERT, REMINDER) and n.channel_id in channels:
                    last_by_channel[n.channel_id] = n
            for channel_id, last in last_by_channel.items():
                if last.created_at <= now - policy.reminder:
                    title, body = policy.wording.follow_up("reminder", first.title, first.body,
                                                           age)
                    session.add(_row(channels[channel_id], REMINDER, now, title=title,
                                     body=body, event_type="service_failed", severity="error",
                                     client_uuid=client.uuid, event_id=first.event_id))
                    written += 1
        if (policy.escalate_after is not None and now - since >= policy.escalate_after
                and not any(n.kind == ESCALATION_KIND for n in said)):
            title, body = policy.wording.follow_up("escalation", first.title, first.body, age)
            for channel in channels.values():
                if ESCALATION in (channel.tags or []):
                    session.add(_row(channel, ESCALATION_KIND, now, title=title, body=body,
                                     event_type="service_failed", severity="critical",
                                     client_uuid=client.uuid, event_id=first.event_id))
                    written += 1
    return written


# Folding: quiet-hours summaries and storm digests --------------------------------------------


def _fold(session: Session, rows: Sequence[Notification], kind: str, now: datetime,
          policy: Policy, groups: dict[str, str | None]) -> Notification:
    first = rows[0]
    items = [(r.title, r.event_type, groups.get(r.client_uuid or "")) for r in rows]
    title, body = policy.wording.bundle(kind, items, min(r.created_at for r in rows))
    worst = max((r.severity for r in rows), key=severity_rank)
    bundle = Notification(channel_id=first.channel_id, channel_shown=first.channel_shown,
                          event_type=first.event_type if len({r.event_type for r in rows}) == 1
                          else "mixed", severity=worst, kind=kind, title=title, body=body,
                          state=PENDING, attempts=0, created_at=now, next_attempt_at=now)
    session.add(bundle)
    session.flush()
    for row in rows:
        row.state, row.folded_into = FOLDED, bundle.id
    return bundle


def _group_names(session: Session, rows: Sequence[Notification]) -> dict[str, str | None]:
    uuids = {r.client_uuid for r in rows if r.client_uuid}
    return {uuid: group for uuid, (_, group) in _clients(session, uuids).items()}


def release_quiet_hours(session: Session, now: datetime, policy: Policy) -> int:
    """After quiet hours: what was held goes out, one summary per channel (or the message
    itself when only one was held). Returns how many channels got something."""
    if policy.quiet_now(now):
        return 0
    held = session.scalars(select(Notification).where(Notification.state == HELD)
                           .order_by(Notification.id)).all()
    by_channel: dict[Any, list[Notification]] = defaultdict(list)
    for row in held:
        by_channel[row.channel_id].append(row)
    groups = _group_names(session, held)
    for rows in by_channel.values():
        if len(rows) == 1:
            rows[0].state, rows[0].next_attempt_at = PENDING, now
        else:
            _fold(session, rows, QUIET_SUMMARY, now, policy, groups)
    return len(by_channel)


def fold_storms(session: Session, now: datetime, policy: Policy,
                busy: Iterable[int] = ()) -> set[int]:
    """More than the threshold for one channel within the window: what is pending becomes one
    digest, at most one per channel and window; until the window after a digest is over, what
    comes is gathered. Returns the ids of the rows gathered: not to be sent yet."""
    busy = set(busy)
    pending = session.scalars(select(Notification).where(
        Notification.state == PENDING, Notification.kind.in_((ALERT, RESOLUTION)),
        Notification.attempts == 0).order_by(Notification.id)).all()
    by_channel: dict[Any, list[Notification]] = defaultdict(list)
    for row in pending:
        if row.id not in busy:
            by_channel[row.channel_id].append(row)
    since = now - policy.digest_window
    gathered: set[int] = set()
    groups = _group_names(session, pending)
    for channel_id, rows in by_channel.items():
        recent = dict(session.execute(
            select(Notification.kind, func.count()).where(
                Notification.channel_id == channel_id, Notification.created_at > since,
                Notification.state.in_((SENT, PENDING)),
                Notification.id.not_in([r.id for r in rows]))
            .group_by(Notification.kind)).all())
        last_digest = session.scalar(select(func.max(Notification.created_at)).where(
            Notification.channel_id == channel_id, Notification.kind == DIGEST))
        if recent.get(DIGEST):
            gathered |= {r.id for r in rows}  # a digest went out: gather until the window ends
        elif len(rows) > 1 and (
                len(rows) + sum(recent.values()) > policy.digest_threshold
                or (last_digest is not None
                    and rows[0].created_at < last_digest + policy.digest_window)):
            _fold(session, rows, DIGEST, now, policy, groups)
    return gathered

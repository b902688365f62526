"""Notification channels: Apprise URLs, declared in NOTIFY_URLS or made by admins.

A channel's URL holds its secrets (tokens, passwords), so it is stored encrypted (Fernet,
with a key derived from NOTIFY_SECRET_KEY) and shown only redacted: the scheme, the host and
the user with the password masked, never the path or the query. A NOTIFY_URLS entry is found
again by a keyed digest of its URL, so that a restart neither duplicates nor forgets it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import NotificationChannel
from core.staff import audit

ENV, ADMIN = "env", "admin"
ESCALATION = "escalation"  # the tag of channels an unacknowledged alert escalates to
TAG_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
# An entry of NOTIFY_URLS ends at white space, or at a comma that starts the next URL (a URL
# may hold commas of its own: mailto://...?to=a@x.org,b@x.org).
_SPLIT = re.compile(r"\s+|,(?=\s*(?:[a-z0-9_+-]+=)?[a-z][a-z0-9+.-]*://)", re.I)
# For development only: production refuses to start without NOTIFY_SECRET_KEY.
DEVELOPMENT_KEY = "infoscreen development notification key"


class ChannelError(ValueError):
    """A channel URL, tag or name is unusable; the message names it without its secrets."""


class ChannelConflict(ChannelError):
    """The name is taken, or the channel is declared in NOTIFY_URLS and cannot change here."""


class ChannelNotFound(LookupError):
    pass


@dataclass(frozen=True)
class DeclaredChannel:
    url: str
    tags: tuple[str, ...]


def _scheme(url: str) -> str:
    return url.split("://", 1)[0][:20] if "://" in url else "?"


def plugin_for(url: str) -> Any:
    """Apprise's plugin for `url`, or ChannelError naming only its scheme."""
    import apprise  # here: a settings check without channels should not pay for it

    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True) if "://" in url else None
    if plugin is None:
        raise ChannelError(f"a {_scheme(url)}:// URL that Apprise cannot use (a typo in the "
                           "scheme, or a part missing); see Apprise's list of services")
    return plugin


def parse_tags(tags: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(t.strip().lower() for t in tags if t.strip()))
    for tag in cleaned:
        if not TAG_RE.match(tag):
            raise ChannelError(f"tag {tag[:40]!r}: lower-case letters, digits, - and _ only")
    return cleaned


def parse_notify_urls(text: str) -> list[DeclaredChannel]:
    """NOTIFY_URLS: URLs separated by spaces or commas, each optionally tagged
    (`escalation=mailto://...`, several tags joined with `+`)."""
    channels = []
    for number, entry in enumerate((e for e in _SPLIT.split(text.strip()) if e), start=1):
        head, sep, _ = entry.partition("://")
        tags: tuple[str, ...] = ()
        if sep and "=" in head:
            tag_text, _, entry = entry.partition("=")
            try:
                tags = parse_tags(tag_text.split("+"))
            except ChannelError as exc:
                raise ChannelError(f"NOTIFY_URLS entry {number}: {exc}") from None
        try:
            plugin_for(entry)
        except ChannelError as exc:
            raise ChannelError(f"NOTIFY_URLS entry {number}: {exc}") from None
        channels.append(DeclaredChannel(entry, tags))
    return channels


def parse_quiet_hours(text: str) -> tuple[time, time] | None:
    """`22:00-06:00` (local time in NOTIFY_TIMEZONE), or None when empty."""
    if not text:
        return None
    try:
        start, end = (time.fromisoformat(part.strip().zfill(5)) for part in text.split("-"))
    except ValueError:
        raise ChannelError(f"NOTIFY_QUIET_HOURS: {text!r} is not HH:MM-HH:MM") from None
    if start == end:
        raise ChannelError("NOTIFY_QUIET_HOURS starts and ends at the same time")
    return start, end


def in_quiet_hours(quiet: tuple[time, time] | None, local: time) -> bool:
    if quiet is None:
        return False
    start, end = quiet
    return start <= local < end if start < end else (local >= start or local < end)


def redact(url: str) -> str:
    """`json://user:****@host:8099/…`: scheme, user and host only."""
    try:
        shown = plugin_for(url).url(privacy=True)
    except ChannelError:
        return f"{_scheme(url)}://…"
    scheme, _, rest = shown.partition("://")
    host = rest.split("?", 1)[0].split("/", 1)[0]
    return f"{scheme}://{host}/…"[:255]


class SecretBox:
    """Encrypts channel URLs at rest, and digests them to find one again."""

    def __init__(self, secret: str):
        key = hashlib.sha256(b"infoscreen notify|" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._digest_key = hashlib.sha256(b"infoscreen notify digest|" + secret.encode()).digest()

    @classmethod
    def from_settings(cls, settings: Any) -> SecretBox:
        return cls(settings.notify_secret_key or DEVELOPMENT_KEY)

    def encrypt(self, url: str) -> str:
        return self._fernet.encrypt(url.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise ChannelError("the channel's URL cannot be decrypted: NOTIFY_SECRET_KEY is "
                               "not the key it was saved with") from None

    def digest(self, url: str) -> str:
        return hmac.new(self._digest_key, url.encode(), hashlib.sha256).hexdigest()


# Storing -----------------------------------------------------------------------------------


def list_channels(session: Session) -> list[NotificationChannel]:
    return list(session.scalars(select(NotificationChannel).order_by(NotificationChannel.id)))


def get_channel(session: Session, channel_id: int) -> NotificationChannel:
    channel = session.get(NotificationChannel, channel_id)
    if channel is None:
        raise ChannelNotFound(f"no notification channel {channel_id}")
    return channel


def _free_name(session: Session, name: str, channel_id: int | None = None) -> None:
    other = session.scalar(select(NotificationChannel).where(NotificationChannel.name == name))
    if other is not None and other.id != channel_id:
        raise ChannelConflict(f"a channel named {name!r} exists already")


def _set_url(channel: NotificationChannel, box: SecretBox, url: str) -> None:
    plugin_for(url)
    channel.url_encrypted = box.encrypt(url)
    channel.url_redacted = redact(url)
    channel.url_digest = box.digest(url)


def create_channel(session: Session, box: SecretBox, now: datetime, *, name: str, url: str,
                   tags: Sequence[str] = (), enabled: bool = True, actor: str,
                   source: str = ADMIN) -> NotificationChannel:
    _free_name(session, name)
    channel = NotificationChannel(name=name, tags=list(parse_tags(tags)), enabled=enabled,
                                  source=source, created_at=now, updated_at=now)
    _set_url(channel, box, url)
    session.add(channel)
    session.flush()
    audit(session, now, actor, "notification_channel_created", str(channel.id), name=name,
          url=channel.url_redacted)
    return channel


def update_channel(session: Session, box: SecretBox, now: datetime, channel_id: int,
                   changes: dict[str, Any], actor: str) -> NotificationChannel:
    channel = get_channel(session, channel_id)
    if channel.source == ENV and set(changes) - {"enabled"}:
        raise ChannelConflict("this channel is declared in NOTIFY_URLS: change it there (only "
                           "`enabled` can be changed here)")
    if "name" in changes:
        _free_name(session, changes["name"], channel.id)
        channel.name = changes["name"]
    if "url" in changes:
        _set_url(channel, box, changes["url"])
    if "tags" in changes:
        channel.tags = list(parse_tags(changes["tags"]))
    if "enabled" in changes:
        channel.enabled = bool(changes["enabled"])
    channel.updated_at = now
    audit(session, now, actor, "notification_channel_changed", str(channel.id),
          fields=sorted(changes))
    return channel


def delete_channel(session: Session, now: datetime, channel_id: int, actor: str) -> None:
    channel = get_channel(session, channel_id)
    if channel.source == ENV:
        raise ChannelConflict("this channel is declared in NOTIFY_URLS: remove it there")
    session.delete(channel)
    audit(session, now, actor, "notification_channel_deleted", str(channel_id),
          name=channel.name)


def sync_declared_channels(session: Session, box: SecretBox, declared: list[DeclaredChannel],
                           now: datetime) -> tuple[int, int]:
    """Make the env channels match NOTIFY_URLS; returns (added, removed)."""
    existing = {c.url_digest: c for c in session.scalars(
        select(NotificationChannel).where(NotificationChannel.source == ENV))}
    wanted = {box.digest(d.url): d for d in declared}
    added = 0
    for number, (digest, channel) in enumerate(wanted.items(), start=1):
        row = existing.get(digest)
        if row is not None:
            row.tags = list(channel.tags)
            continue
        name = f"NOTIFY_URLS {number}: {redact(channel.url)}"[:64]
        while session.scalar(select(NotificationChannel.id)
                             .where(NotificationChannel.name == name)) is not None:
            name = f"{name[:58]} ({added + 2})"
        create_channel(session, box, now, name=name, url=channel.url, tags=channel.tags,
                       actor="NOTIFY_URLS", source=ENV)
        added += 1
    gone = [row for digest, row in existing.items() if digest not in wanted]
    for row in gone:
        session.delete(row)
    return added, len(gone)

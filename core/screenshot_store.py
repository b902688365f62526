"""Where screenshots live: the pictures as files under SCREENSHOT_DIR, a row each in the
database, and what a capture says about the screen (black, frozen) as fleet events.

A capture's files are written first (atomically: a temporary name, then a rename), then its
row is committed; removal goes the other way round (the row, then the files). A crash in
between leaves a file without a row, never a row without its file, and `reconcile` removes
such files (and rows whose files someone deleted). File names are made here from the client's
uuid (checked against the uuid pattern at parsing) and numbers: no device text becomes a path.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.config import Settings
from core.contract import PROCESS_STATUSES
from core.db import dialect_insert
from core.events import new_event
from core.models import Client, Event, Screenshot
from core.screenshots import PRIORITY_TYPES, Capture

log = logging.getLogger(__name__)

THUMB_SUFFIX = "-thumb.jpg"
TEMP_PREFIX = ".tmp-"
ORPHAN_GRACE = timedelta(minutes=5)  # a file this young may belong to a row being committed
PRUNE_CHUNK = 500


@dataclass(frozen=True)
class Retention:
    history: int  # captures kept per client
    priority_ttl: timedelta  # event_start / event_stop captures kept (and served) this long
    budget_bytes: int  # all pictures and thumbnails together
    frozen_after: timedelta | None  # the same picture this long is screen_frozen

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        frozen = settings.screen_frozen_seconds
        return cls(
            history=settings.screenshot_history,
            priority_ttl=timedelta(seconds=settings.priority_screenshot_ttl_seconds),
            budget_bytes=settings.screenshot_disk_budget_mb * 1024 * 1024,
            frozen_after=timedelta(seconds=frozen) if frozen else None,
        )


@dataclass
class Removal:
    """Files to unlink once the rows' deletion is committed."""

    files: list[Path] = field(default_factory=list)

    def unlink(self) -> None:
        for path in self.files:
            path.unlink(missing_ok=True)


class ScreenshotStore:
    def __init__(self, directory: Path | str, retention: Retention):
        self.directory = Path(directory)
        self.retention = retention

    @classmethod
    def from_settings(cls, settings: Settings) -> ScreenshotStore:
        # Absolute: the web server hands paths to Flask, which reads a relative one from the
        # application's package folder, not from where the listener wrote it.
        return cls(Path(settings.screenshot_dir).resolve(), Retention.from_settings(settings))

    # Paths -------------------------------------------------------------------------------

    def path(self, shot: Screenshot, *, thumb: bool = False) -> Path:
        name = shot.file.removesuffix(f".{shot.format}") + THUMB_SUFFIX if thumb else shot.file
        return self.directory / name

    def _write(self, relative: str, data: bytes) -> Path:
        target = self.directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
        try:
            # No fsync: a picture is not worth a disk flush 17 times a second. After a power
            # cut a recent file may be short; the reconciliation drops such a capture.
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    # Storing -----------------------------------------------------------------------------

    def save(self, session: Session, capture: Capture, now: datetime) -> tuple[Screenshot,
                                                                                Removal]:
        """Write the capture's files and add its row, its events and what it says about the
        client; the caller commits, then calls `Removal.unlink` for what pruning removed.
        On a failed commit the caller deletes `self.path(row)` and its thumbnail."""
        picture = capture.picture
        _register(session, capture)
        stem = f"{capture.client_uuid}/{int(capture.received_at.timestamp() * 1000)}-" \
               f"{picture.sha256[:16]}"
        file = f"{stem}.{picture.format}"
        self._write(file, picture.data)
        self._write(stem + THUMB_SUFFIX, picture.thumbnail)
        shot = Screenshot(
            client_uuid=capture.client_uuid, captured_at=capture.captured_at,
            received_at=capture.received_at, type=capture.type, source=capture.source,
            format=picture.format, bytes=len(picture.data), thumb_bytes=len(picture.thumbnail),
            width=picture.width, height=picture.height, sha256=picture.sha256,
            black=picture.black, file=file,
        )
        session.add(shot)
        client = session.get(Client, capture.client_uuid, with_for_update=True)
        assert client is not None  # registered above
        session.add_all(self._screen_events(client, capture))
        _apply_runtime(client, capture)
        session.flush()
        return shot, self.prune_client(session, capture.client_uuid, now)

    def discard(self, shot: Screenshot) -> None:
        """The files of a row that was never committed."""
        for path in (self.path(shot), self.path(shot, thumb=True)):
            path.unlink(missing_ok=True)

    def _screen_events(self, client: Client, capture: Capture) -> list[Event]:
        picture, at = capture.picture, capture.received_at
        events = []
        if picture.black and client.screen_black_since is None:
            client.screen_black_since = at
            events.append(new_event("screen_black", "warning", at, client.uuid,
                                    capturedAt=capture.captured_at.isoformat()))
        elif not picture.black and client.screen_black_since is not None:
            events.append(new_event("screen_recovered", "info", at, client.uuid, was="black",
                                    since=client.screen_black_since.isoformat()))
            client.screen_black_since = None
        if picture.fingerprint != client.screen_fingerprint:
            if client.screen_frozen_reported:
                events.append(new_event("screen_recovered", "info", at, client.uuid,
                                        was="frozen",
                                        since=_iso(client.screen_fingerprint_since)))
            client.screen_fingerprint, client.screen_fingerprint_since = picture.fingerprint, at
            client.screen_frozen_reported = False
        elif self._frozen(client, picture.black, at):
            client.screen_frozen_reported = True
            events.append(new_event("screen_frozen", "warning", at, client.uuid,
                                    since=_iso(client.screen_fingerprint_since)))
        return events

    def _frozen(self, client: Client, black: bool, at: datetime) -> bool:
        after = self.retention.frozen_after
        since = client.screen_fingerprint_since
        # A black screen is reported as black, not also as frozen.
        return (after is not None and not black and not client.screen_frozen_reported
                and since is not None and at - since >= after)

    # Pruning -----------------------------------------------------------------------------

    def _priority_kept(self, now: datetime):
        return (Screenshot.type.in_(PRIORITY_TYPES)
                & (Screenshot.received_at > now - self.retention.priority_ttl))

    def prune_client(self, session: Session, client_uuid: str, now: datetime) -> Removal:
        """Keep the client's last `history` captures and its active priority captures."""
        newest = select(Screenshot.id).where(Screenshot.client_uuid == client_uuid) \
            .order_by(Screenshot.id.desc()).limit(self.retention.history)
        old = session.scalars(
            select(Screenshot).where(Screenshot.client_uuid == client_uuid,
                                     Screenshot.id.not_in(newest),
                                     ~self._priority_kept(now))
        ).all()
        return self._remove(session, old)

    def prune_budget(self, session: Session) -> Removal:
        """Oldest first until every picture and thumbnail fits SCREENSHOT_DISK_BUDGET_MB;
        each client's newest capture goes last of all."""
        used = session.scalar(select(func.coalesce(func.sum(Screenshot.bytes
                                                            + Screenshot.thumb_bytes), 0)))
        removal = Removal()
        if not used or used <= self.retention.budget_bytes:
            return removal
        newest = select(func.max(Screenshot.id)).group_by(Screenshot.client_uuid)
        for query in (select(Screenshot).where(Screenshot.id.not_in(newest)), select(Screenshot)):
            for shot in session.scalars(query.order_by(Screenshot.id).limit(PRUNE_CHUNK)):
                if used <= self.retention.budget_bytes:
                    return removal
                used -= shot.bytes + shot.thumb_bytes
                removal.files += self._remove(session, [shot]).files
        return removal

    def prune_expired_priority(self, session: Session, now: datetime) -> Removal:
        """Priority captures past their time that the history no longer holds."""
        removal = Removal()
        clients = session.scalars(
            select(Screenshot.client_uuid).where(
                Screenshot.type.in_(PRIORITY_TYPES),
                Screenshot.received_at <= now - self.retention.priority_ttl).distinct())
        for client_uuid in clients.all():
            removal.files += self.prune_client(session, client_uuid, now).files
        return removal

    def _remove(self, session: Session, shots: Iterable[Screenshot]) -> Removal:
        removal = Removal()
        ids = []
        for shot in shots:
            ids.append(shot.id)
            removal.files += [self.path(shot), self.path(shot, thumb=True)]
        if ids:
            session.execute(delete(Screenshot).where(Screenshot.id.in_(ids))
                            .execution_options(synchronize_session=False))
        return removal

    # Reconciliation ----------------------------------------------------------------------

    def reconcile(self, session: Session, now: datetime) -> tuple[int, int]:
        """Remove rows whose picture file is gone, then files no row names (older than a few
        minutes: a capture being stored has its files before its row). Returns both counts."""
        missing = [shot for shot in session.scalars(select(Screenshot))
                   if not _holds(self.path(shot), shot.bytes)]
        self._remove(session, missing).unlink()  # their thumbnails, if still there
        known = {p for shot in session.scalars(select(Screenshot))
                 for p in (self.path(shot), self.path(shot, thumb=True))}
        cutoff = (now - ORPHAN_GRACE).timestamp()
        orphans = [path for path in self.directory.glob("*/*")
                   if path not in known and path.stat().st_mtime < cutoff]
        for path in orphans:
            path.unlink(missing_ok=True)
        if orphans or missing:
            log.warning("screenshots: removed %d files without a row and %d rows without a "
                        "file", len(orphans), len(missing))
        return len(orphans), len(missing)


def _holds(path: Path, size: int) -> bool:
    """The file is there, whole."""
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _register(session: Session, capture: Capture) -> None:
    """A screenshot is a sign of life, and registers a client we did not know."""
    at = capture.received_at
    stmt = dialect_insert(session)(Client).values(
        uuid=capture.client_uuid, first_seen_at=at, last_seen_at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Client.uuid],
        set_={"last_seen_at": func.coalesce(
            _later(session, Client.last_seen_at, stmt.excluded.last_seen_at),
            stmt.excluded.last_seen_at)},
    ).returning(Client.first_seen_at)
    first_seen = session.execute(stmt).scalar_one()
    if first_seen == at:
        session.add(new_event("client_registered", "info", at, capture.client_uuid))


def _later(session: Session, current, new):
    if session.get_bind().dialect.name == "postgresql":
        return func.greatest(current, new)
    return func.max(func.coalesce(current, new), new)


def _apply_runtime(client: Client, capture: Capture) -> None:
    """The dashboard's runtime blocks update the client: host name, address, process."""
    runtime = capture.runtime
    if not runtime or (client.runtime_at and client.runtime_at > capture.received_at):
        return
    client.runtime, client.runtime_at = runtime, capture.received_at
    info = runtime.get("system_info") if isinstance(runtime.get("system_info"), dict) else {}
    for name in ("hostname", "ip"):
        if isinstance(info.get(name), str) and info[name]:
            setattr(client, name, info[name][:255 if name == "hostname" else 45])
    health = runtime.get("process_health")
    status = health.get("process_status") if isinstance(health, dict) else None
    if (isinstance(status, str) and status.lower() in PROCESS_STATUSES
            and (client.process_status_at is None
                 or client.process_status_at <= capture.received_at)):
        client.process_status = status.lower()
        client.process_status_at = capture.received_at


def latest_captures(session: Session, uuids: Sequence[str]) -> dict[str, Screenshot]:
    """The newest capture of each client of `uuids` that has one, in one query."""
    if not uuids:
        return {}
    return {shot.client_uuid: shot for shot in session.scalars(
        select(Screenshot).where(Screenshot.id.in_(_newest_ids(uuids))))}


def _newest_ids(uuids: Sequence[str], *conditions: Any):
    """The id of each client's newest capture (that meets `conditions`), as a subquery."""
    return (select(func.max(Screenshot.id))
            .where(Screenshot.client_uuid.in_(uuids), *conditions)
            .group_by(Screenshot.client_uuid))


@dataclass
class ScreenshotOverview:
    clients: dict[str, dict[str, object]]
    active_priority: int  # screens with an active priority capture, in the whole fleet


def screenshot_overview(session: Session, uuids: list[str], now: datetime,
                        priority_ttl_seconds: int) -> ScreenshotOverview:
    """Per client of `uuids`: the type of its newest capture and of its newest priority
    capture, when that came, and whether it is still active (the monitoring overview)."""
    active_since = now - timedelta(seconds=priority_ttl_seconds)
    newest_priority = _newest_ids(uuids, Screenshot.type.in_(PRIORITY_TYPES))
    latest = dict(session.execute(select(Screenshot.client_uuid, Screenshot.type)
                                  .where(Screenshot.id.in_(_newest_ids(uuids)))).all())
    priority = {row.client_uuid: row for row in session.execute(
        select(Screenshot.client_uuid, Screenshot.type, Screenshot.received_at)
        .where(Screenshot.id.in_(newest_priority)))}
    clients: dict[str, dict[str, object]] = {}
    for uuid in uuids:
        row = priority.get(uuid)
        clients[uuid] = {
            "latestScreenshotType": latest.get(uuid),
            "priorityScreenshotType": row.type if row else None,
            "priorityScreenshotReceivedAt": _iso(row.received_at) if row else None,
            "hasActivePriorityScreenshot": bool(row and row.received_at > active_since),
        }
    active = session.scalar(select(func.count(func.distinct(Screenshot.client_uuid))).where(
        Screenshot.type.in_(PRIORITY_TYPES), Screenshot.received_at > active_since)) or 0
    return ScreenshotOverview(clients, active)

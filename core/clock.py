"""The one clock: UTC, timezone-aware, injectable so that tests pin time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC (SQLite returns them naive); aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_z(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a `Z`, as the deployed clients write times."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")

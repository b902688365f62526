"""alive / stale / down from the age of a client's last message (DESIGN.md §6)."""

from __future__ import annotations

from datetime import datetime

from core.clock import as_utc

ALIVE, STALE, DOWN = "alive", "stale", "down"


def liveness(last_seen_at: datetime, now: datetime, stale_seconds: int, down_seconds: int) -> str:
    age = (now - as_utc(last_seen_at)).total_seconds()
    if age >= down_seconds:
        return DOWN
    if age >= stale_seconds:
        return STALE
    return ALIVE

"""Fleet events: the rows that the panels list and the outbox delivers to monitors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.models import Event


def new_event(
    type_: str, severity: str, when: datetime, client_uuid: str | None = None, **details: Any
) -> Event:
    return Event(
        type=type_, severity=severity, client_uuid=client_uuid, occurred_at=when, details=details
    )

"""Fleet events: the rows that the panels list and the outbox delivers to monitors."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from core.models import Event


def new_event(
    type_: str, severity: str, when: datetime, client_uuid: str | None = None, **details: Any
) -> Event:
    return Event(
        type=type_, severity=severity, client_uuid=client_uuid, occurred_at=when, details=details
    )


def insert_events(session: Session, type_: str, severity: str, when: datetime,
                  per_client: Iterable[tuple[str | None, dict[str, Any]]]) -> int:
    """Many events of one type in one statement (the scheduler's set-based jobs);
    `per_client` holds (client_uuid, details) pairs. Returns how many were written."""
    rows = [
        {"type": type_, "severity": severity, "client_uuid": client_uuid, "occurred_at": when,
         "delivered_at": None, "details": details}
        for client_uuid, details in per_client
    ]
    if rows:
        session.execute(insert(Event), rows)
    return len(rows)

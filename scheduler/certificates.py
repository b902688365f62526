"""The daily check of the broker's certificates (mosquitto.certs.check) as fleet events.

At most once per UTC day: the day of the last check is kept in `scheduler_state` and claimed
with a compare-and-set, so a restart or a second scheduler does not check (and raise the same
events) again that day. A directory without a CA (a plain development setup) is left alone.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.events import new_event
from core.models import SchedulerState
from mosquitto import certs
from mosquitto.certs import CertStatus, CertStore, Problem

log = logging.getLogger(__name__)

STATE_NAME = "certificates_checked_on"
CLIENT_EXAMPLES = 20  # device certificates named in one aggregated event


def claim_day(session: Session, name: str, now: datetime) -> bool:
    """True for the first caller on this UTC day (compare-and-set on scheduler_state)."""
    today = now.date().isoformat()
    claimed = session.execute(
        update(SchedulerState)
        .where(SchedulerState.name == name, SchedulerState.value != today)
        .values(value=today, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed:
        return True
    if session.scalar(select(SchedulerState.name).where(SchedulerState.name == name)):
        return False  # already claimed today
    try:
        with session.begin_nested():
            session.add(SchedulerState(name=name, value=today, updated_at=now))
    except IntegrityError:
        return False  # another scheduler inserted it first
    return True


def _expiry(problem: Problem) -> str | None:
    return {"expiring": "certificate_expiring", "expired": "certificate_expired"}.get(problem.code)


def _details(cert: CertStatus, problem: Problem) -> dict[str, Any]:
    return {"role": cert.role, "path": str(cert.path), "subject": cert.subject,
            "notAfter": cert.not_after.isoformat(), "daysLeft": cert.days_left,
            "code": problem.code, "message": problem.message}


class CheckCertificates:
    """One event per certificate of the CA, previous CA and server with a problem:
    `certificate_expiring` (warning within warn_days, error within error_days),
    `certificate_expired` (error), and `certificate_problem` (error) for any other error.
    Device certificates (mutual TLS) are summed up in one event per type, never one per
    device: a fleet issued on one day expires on one day."""

    def __init__(self, directory: Path, *, warn_days: int = certs.WARN_DAYS,
                 error_days: int = certs.ERROR_DAYS):
        self.directory = Path(directory)
        self.warn_days = warn_days
        self.error_days = error_days
        self._said_no_ca = False

    def __call__(self, session: Session, now: datetime) -> bool:
        if not CertStore(self.directory).ca_cert.exists():
            if not self._said_no_ca:
                log.info("no CA in %s: certificate checks are off until there is one",
                         self.directory)
                self._said_no_ca = True
            return False
        self._said_no_ca = False
        if not claim_day(session, STATE_NAME, now):
            return False
        report = certs.check(self.directory, now, warn_days=self.warn_days,
                             error_days=self.error_days)
        events = []
        devices: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for cert, problem in report.all_problems:
            type_ = _expiry(problem)
            if type_ is None and problem.level != "error":
                continue  # warnings other than expiry (a key readable by others) stay in the CLI
            type_ = type_ or "certificate_problem"
            if cert is None:  # the directory as a whole: an unreadable file
                events.append(new_event(type_, "error", now, path=str(report.directory),
                                        code=problem.code, message=problem.message))
            elif cert.role == "client":
                devices.setdefault((type_, problem.level), []).append(_details(cert, problem))
            else:
                events.append(new_event(type_, problem.level, now, **_details(cert, problem)))
        for (type_, severity), found in sorted(devices.items()):
            found.sort(key=lambda d: d["notAfter"])
            events.append(new_event(
                type_, severity, now, role="client", count=len(found),
                notAfter=found[0]["notAfter"], daysLeft=found[0]["daysLeft"],
                codes=sorted({d["code"] for d in found}),
                clients=[Path(d["path"]).stem for d in found[:CLIENT_EXAMPLES]],
            ))
        session.add_all(events)
        log.info("certificates checked in %s: %d certificates, %d events",
                 self.directory, len(report.certificates), len(events))
        return False

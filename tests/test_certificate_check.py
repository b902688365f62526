"""The scheduler's daily certificate check (scheduler.certificates): expiry and problems of the
broker's certificates as fleet events, at most once per day, on both databases."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import Settings
from core.models import Event, SchedulerState
from mosquitto.certs import CertStore, init_ca, issue_client, issue_server
from scheduler.certificates import STATE_NAME, CheckCertificates
from scheduler.service import build_jobs

ISSUED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SERVER_DAYS = 100
EXPIRES = ISSUED + timedelta(days=SERVER_DAYS)  # the server certificate's notAfter
SCREEN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER_SCREEN = "00000000-0000-0000-0000-000000000002"


@pytest.fixture
def certs(tmp_path) -> Path:
    directory = tmp_path / "certs"
    init_ca(directory, now=ISSUED)
    issue_server(directory, dns_names=["broker.example"], days=SERVER_DAYS, now=ISSUED)
    return directory


def days_before_expiry(days: float, hour: int = 0) -> datetime:
    return EXPIRES - timedelta(days=days) + timedelta(hours=hour)


def step(db, job, at: datetime) -> bool:
    with db.sessions() as session, session.begin():
        return job(session, at)


def events(db) -> list[tuple[str, str, dict]]:
    with db.sessions() as session:
        return [(e.type, e.severity, e.details)
                for e in session.scalars(select(Event).order_by(Event.id))]


def test_it_raises_nothing_for_certificates_far_from_expiry_but_keeps_the_day(db, certs):
    at = days_before_expiry(31)
    assert step(db, CheckCertificates(certs), at) is False
    assert events(db) == []
    with db.sessions() as session:
        state = session.get(SchedulerState, STATE_NAME)
        assert (state.value, state.updated_at) == (at.date().isoformat(), at)


def test_it_warns_30_days_before_the_server_certificate_expires(db, certs):
    step(db, CheckCertificates(certs), days_before_expiry(30))
    [(type_, severity, details)] = events(db)
    assert (type_, severity) == ("certificate_expiring", "warning")
    assert details == {
        "role": "server", "path": str(certs / "server.crt"),
        "subject": "CN=broker.example,O=Infoscreen", "notAfter": EXPIRES.isoformat(),
        "daysLeft": 30, "code": "expiring", "message": details["message"],
    }
    assert "expires in 30 days" in details["message"]


def test_it_raises_an_error_7_days_before_expiry(db, certs):
    step(db, CheckCertificates(certs), days_before_expiry(7))
    assert [(t, s, d["daysLeft"]) for t, s, d in events(db)] == [
        ("certificate_expiring", "error", 7)]


def test_it_still_warns_at_8_days(db, certs):
    step(db, CheckCertificates(certs), days_before_expiry(8))
    assert [(t, s) for t, s, _ in events(db)] == [("certificate_expiring", "warning")]


def test_it_raises_certificate_expired_once_the_date_has_passed(db, certs):
    step(db, CheckCertificates(certs), EXPIRES + timedelta(hours=1))
    [(type_, severity, details)] = events(db)
    assert (type_, severity, details["code"], details["daysLeft"]) == (
        "certificate_expired", "error", "expired", -1)


def test_it_checks_at_most_once_a_day_across_restarts_and_runs_again_the_next_day(db, certs):
    job = CheckCertificates(certs)
    step(db, job, days_before_expiry(20, hour=1))
    step(db, job, days_before_expiry(20, hour=5))  # same day
    step(db, CheckCertificates(certs), days_before_expiry(20, hour=9))  # a restarted scheduler
    assert len(events(db)) == 1
    step(db, job, days_before_expiry(19, hour=0))  # the next day
    assert [d["daysLeft"] for _, _, d in events(db)] == [19, 19]  # 19 d 23 h, then 19 d


def test_a_failed_check_is_not_counted_as_done(db, certs):
    job = CheckCertificates(certs)
    with pytest.raises(RuntimeError), db.sessions() as session, session.begin():
        job(session, days_before_expiry(20))
        raise RuntimeError("the transaction is rolled back")
    step(db, job, days_before_expiry(20, hour=1))
    assert len(events(db)) == 1


def test_it_does_nothing_without_a_ca_and_says_so_once(db, tmp_path, caplog):
    job = CheckCertificates(tmp_path / "no-certs")
    with caplog.at_level(logging.INFO, logger="scheduler.certificates"):
        for hour in range(3):
            assert step(db, job, days_before_expiry(3, hour=hour)) is False
    assert events(db) == []
    with db.sessions() as session:
        assert session.get(SchedulerState, STATE_NAME) is None
    assert [r.levelname for r in caplog.records if "no CA" in r.getMessage()] == ["INFO"]


def test_it_reports_an_expiring_ca(db, tmp_path):
    directory = tmp_path / "certs"
    init_ca(directory, days=60, now=ISSUED)
    issue_server(directory, dns_names=["broker.example"], days=30, now=ISSUED)
    step(db, CheckCertificates(directory), ISSUED + timedelta(days=55))
    assert sorted((t, s, d["role"]) for t, s, d in events(db)) == [
        ("certificate_expired", "error", "server"),
        ("certificate_expiring", "error", "ca"),
    ]


def test_it_reports_other_errors_as_certificate_problem(db, certs):
    CertStore(certs).server_key.unlink()
    step(db, CheckCertificates(certs), days_before_expiry(60))
    [(type_, severity, details)] = events(db)
    assert (type_, severity, details["role"], details["code"]) == (
        "certificate_problem", "error", "server", "key_missing")


def test_an_unreadable_certificate_is_a_problem_of_the_directory(db, certs):
    CertStore(certs).server_cert.write_text("not a certificate")
    step(db, CheckCertificates(certs), days_before_expiry(60))
    [(type_, severity, details)] = events(db)
    assert (type_, severity, details["code"], details["path"]) == (
        "certificate_problem", "error", "unreadable", str(certs))


def test_device_certificates_are_summed_up_in_one_event_not_one_per_device(db, certs):
    for uuid in (SCREEN, OTHER_SCREEN):
        issue_client(certs, uuid, days=SERVER_DAYS + 10, now=ISSUED)
    step(db, CheckCertificates(certs), days_before_expiry(-5))  # 5 days before the devices'
    assert sorted((t, s, d["role"], d.get("count")) for t, s, d in events(db)) == [
        ("certificate_expired", "error", "server", None),
        ("certificate_expiring", "error", "client", 2),
    ]
    [device_event] = [d for _, _, d in events(db) if d["role"] == "client"]
    assert device_event["clients"] == [OTHER_SCREEN, SCREEN]
    assert device_event["daysLeft"] == 5


def test_build_jobs_checks_the_broker_dirs_certificates_unless_told_otherwise(tmp_path):
    def job(**values):
        settings = Settings.model_validate({"BROKER_DIR": str(tmp_path), **values})
        return dict(build_jobs(settings, publisher=object(), session_factory=None))

    assert job()["check_certificates"].directory == tmp_path / "certs"
    assert job(CERT_CHECK_DIR="/etc/infoscreen/certs")["check_certificates"].directory == Path(
        "/etc/infoscreen/certs")
    names = [name for name, _ in build_jobs(Settings.model_validate({}), object(), None)]
    assert names.index("check_certificates") > names.index("prune_history")

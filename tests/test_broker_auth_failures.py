"""Failed broker logins from Mosquitto's log (scheduler.broker_auth): a synthetic log file that
grows, rotates and shrinks, and once a real broker refusing a wrong password; both databases."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import Settings
from core.models import Event
from infoscreen.dev import find_mosquitto
from scheduler.broker_auth import BrokerAuthFailures, LogTail, safe_text
from scheduler.service import build_jobs
from tests import brokers
from tests.helpers import wait_until

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
INTERVAL = 300

# What Mosquitto 2.0.11 writes (see scheduler/broker_auth.py).
STARTED = "2026-11-24T11:59:00: mosquitto version 2.0.11 running\n"


def refused(address: str = "203.0.113.7", port: int = 50000) -> str:
    return (f"2026-11-24T12:00:00: New connection from {address}:{port} on port 8883.\n"
            "2026-11-24T12:00:00: Client <unknown> disconnected, not authorised.\n")


def logged_in(address: str = "198.51.100.2", port: int = 40000, client_id: str = "svc") -> str:
    return (f"2026-11-24T12:00:00: New connection from {address}:{port} on port 8883.\n"
            f"2026-11-24T12:00:00: New client connected from {address}:{port} as {client_id} "
            "(p5, c1, k30, u'svc').\n")


TLS_FAILED = ("2026-11-24T12:00:01: Client connection from 192.0.2.9 failed: "
              "error:0A000086:SSL routines::certificate verify failed.\n")


def seconds(n: float) -> datetime:
    return NOW + timedelta(seconds=n)


@pytest.fixture
def log_file(tmp_path) -> Path:
    path = tmp_path / "mosquitto.log"
    path.write_text(STARTED + refused() * 3)  # before the scheduler started: not counted
    return path


def append(path: Path, text: str | bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)


def cycle(db, job, at: datetime = NOW) -> int:
    """What the scheduler's loop does in one cycle: steps until nothing is left."""
    steps = 1
    while True:
        with db.sessions() as session, session.begin():
            if not job(session, at):
                return steps
        steps += 1


def reports(db) -> list[dict]:
    with db.sessions() as session:
        found = session.scalars(select(Event).order_by(Event.id)).all()
        assert {(e.type, e.severity, e.client_uuid) for e in found} <= {
            ("broker_auth_failures", "warning", None)}
        return [e.details for e in found]


def test_it_counts_only_what_the_broker_logs_after_the_scheduler_started(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    assert reports(db) == []
    append(log_file, refused() + logged_in() + refused("203.0.113.8") + TLS_FAILED)
    cycle(db, job)
    assert reports(db) == [{
        "count": 3,
        "byKind": {"not_authorised": 2, "tls_handshake": 1},
        "byAddress": {"203.0.113.7": 1, "203.0.113.8": 1, "192.0.2.9": 1},
        "examples": [
            {"kind": "not_authorised", "address": "203.0.113.7"},
            {"kind": "not_authorised", "address": "203.0.113.8"},
            {"kind": "tls_handshake", "address": "192.0.2.9",
             "detail": "error:0A000086:SSL routines::certificate verify failed"},
        ],
        "totalSinceStart": 3,
    }]


def test_a_brute_force_attempt_makes_one_event_per_interval_not_one_per_attempt(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    append(log_file, "".join(refused(port=p) for p in range(20_000)))  # ~2.4 MB
    assert cycle(db, job) > 1  # read in bounded steps
    [first] = reports(db)
    assert (first["count"], len(first["examples"])) == (20_000, 5)
    append(log_file, refused() * 10)
    cycle(db, job, seconds(INTERVAL - 1))
    assert len(reports(db)) == 1  # held back within the interval
    append(log_file, refused() * 5)
    cycle(db, job, seconds(INTERVAL))
    assert [(r["count"], r["totalSinceStart"]) for r in reports(db)] == [
        (20_000, 20_000), (15, 20_015)]
    cycle(db, job, seconds(2 * INTERVAL))
    assert len(reports(db)) == 2  # nothing new, nothing raised


def test_it_follows_a_rotated_log_and_reads_the_rest_of_the_old_one_first(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    append(log_file, refused("203.0.113.1"))
    os.rename(log_file, log_file.with_suffix(".log.1"))
    append(log_file.with_suffix(".log.1"), refused("203.0.113.2"))  # written before the reopen
    cycle(db, job)  # the new file is not there yet
    log_file.write_text(refused("203.0.113.3"))
    cycle(db, job, seconds(INTERVAL))
    assert [sorted(r["byAddress"]) for r in reports(db)] == [
        ["203.0.113.1", "203.0.113.2"], ["203.0.113.3"]]


def test_it_reads_a_truncated_log_from_the_start(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    log_file.write_text(refused("203.0.113.4"))  # copytruncate: same file, shorter
    cycle(db, job)
    assert [r["byAddress"] for r in reports(db)] == [{"203.0.113.4": 1}]


def test_it_survives_garbage_overlong_lines_and_half_written_lines(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    half = refused()
    append(log_file, b"\x00\xff\xfe binary junk\n" + b"x" * 3_000_000 + b"\n"
           + b"Client <unknown> disconnected, not authorised." + b"y" * 5000 + b"\n"
           + half[:-20].encode())
    cycle(db, job)
    assert reports(db) == []  # the last line is not complete yet
    append(log_file, half[-20:])
    cycle(db, job)
    assert [r["count"] for r in reports(db)] == [1]


def test_client_chosen_text_is_escaped_and_truncated(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    evil = "<script>\x1b[31m" + "A" * 100
    append(log_file, f"2026-11-24T12:00:00: Client {evil} disconnected, not authorised.\n")
    cycle(db, job)
    [example] = reports(db)[0]["examples"]
    assert example["clientId"] == safe_text(evil)
    assert example["clientId"].startswith("<script>\\x1b[31mAAA")
    assert len(example["clientId"]) == 64 and example["clientId"].endswith("…")


def test_a_refused_login_gets_no_address_when_several_addresses_wait(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    append(log_file,
           "New connection from 203.0.113.5:1 on port 8883.\n"
           "New connection from 203.0.113.6:2 on port 8883.\n"
           "Client <unknown> disconnected, not authorised.\n")
    cycle(db, job)
    [report] = reports(db)
    assert (report["count"], report["byAddress"], report["examples"]) == (
        1, {}, [{"kind": "not_authorised"}])


def test_a_report_whose_transaction_was_rolled_back_is_made_again(db, log_file):
    job = BrokerAuthFailures(log_file, interval_seconds=INTERVAL)
    cycle(db, job)
    append(log_file, refused() * 2)
    with pytest.raises(RuntimeError), db.sessions() as session, session.begin():
        job(session, NOW)
        raise RuntimeError("the database went away")
    cycle(db, job, seconds(1))
    assert [r["count"] for r in reports(db)] == [2]


def test_a_missing_log_file_is_read_whole_once_it_appears(db, tmp_path):
    path = tmp_path / "later.log"
    job = BrokerAuthFailures(path, interval_seconds=INTERVAL)
    cycle(db, job)
    path.write_text(refused())
    cycle(db, job)
    assert [r["count"] for r in reports(db)] == [1]


def test_the_log_tail_does_not_hand_out_lines_twice(tmp_path):
    path = tmp_path / "a.log"
    path.write_text("old\n")
    tail = LogTail(path)
    assert tail.read() == ([], False)
    append(path, "one\ntwo\nthr")
    assert tail.read() == (["one", "two"], False)
    append(path, "ee\n")
    assert tail.read() == (["three"], False)
    tail.close()


def test_build_jobs_watches_the_broker_log_only_when_configured(tmp_path):
    def names(**values):
        settings = Settings.model_validate(values)
        return [name for name, _ in build_jobs(settings, publisher=object(), session_factory=None)]

    assert "broker_auth_failures" not in names()
    with_log = names(BROKER_LOG_FILE=str(tmp_path / "mosquitto.log"))
    assert with_log.index("broker_auth_failures") > with_log.index("prune_history")


@pytest.mark.skipif(not find_mosquitto(),
                    reason="mosquitto is not installed (scripts/bootstrap.sh)")
def test_a_wrong_password_at_a_real_broker_is_counted(db, tmp_path):
    broker = brokers.TestBroker(tmp_path / "broker")
    broker.provision()
    broker.start()
    try:
        job = BrokerAuthFailures(broker.directory / "mosquitto.log", interval_seconds=INTERVAL)
        cycle(db, job)  # from here on
        intruder = broker.client(brokers.Login(broker.server.username, "wrong-password"),
                                 f"intruder-{uuid.uuid4().hex[:6]}")
        intruder.connect(broker.host, broker.port, keepalive=10)
        intruder.loop_start()
        try:
            def counted() -> list[dict]:
                cycle(db, job)
                return reports(db)

            [report] = wait_until(counted, timeout=10, message="the refused login in the log")
        finally:
            intruder.disconnect()
            intruder.loop_stop()
    finally:
        broker.remove()
    assert report["byKind"] == {"not_authorised": 1}
    assert report["byAddress"] == {"127.0.0.1": 1}

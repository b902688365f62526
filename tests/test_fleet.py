"""The fleet queries behind the staff API and panels, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.fleet import (
    FleetError,
    acknowledge_service_failed,
    client_page,
    crashed_clients,
    event_page,
    fleet_overview,
    open_service_failed,
)
from core.models import AuditEntry, Client, Event

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
STALE, DOWN = 90, 300


def uuid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def seed(db, **clients):
    """name=(seconds since last message, extra fields)"""
    with db.sessions() as session, session.begin():
        for n, (name, (age, extra)) in enumerate(clients.items(), start=1):
            seen = NOW - timedelta(seconds=age)
            session.add(Client(uuid=uuid(n), hostname=name, ip=f"10.0.0.{n}",
                               first_seen_at=seen, last_seen_at=seen,
                               last_heartbeat_at=extra.pop("heartbeat", seen), **extra))


FLEET = {
    "hall": (5, {"process_status": "running"}),
    "library": (10, {"process_status": "crashed"}),
    "gym": (120, {}),
    "office_1": (1000, {}),
    "cafeteria": (20, {"service_failed_at": NOW, "service_failed_unit": "player.service",
                       "service_failed_received_at": NOW}),
}


def page(db, **kw):
    with db.sessions() as session:
        total, rows = client_page(session, NOW, STALE, DOWN, **kw)
        return total, [c.hostname for c in rows]


def test_the_client_list_filters_by_status_computed_from_last_seen(db):
    seed(db, **FLEET)
    assert page(db, status="alive") == (3, ["cafeteria", "hall", "library"])
    assert page(db, status="stale") == (1, ["gym"])
    assert page(db, status="down") == (1, ["office_1"])


def test_the_client_list_pages_and_counts(db):
    seed(db, **FLEET)
    assert page(db, per_page=2, page=1) == (5, ["cafeteria", "gym"])
    assert page(db, per_page=2, page=3) == (5, ["office_1"])
    assert page(db, sort="lastSeen", per_page=1) == (5, ["hall"])


def test_the_client_list_searches_hostname_ip_and_uuid_literally(db):
    seed(db, **FLEET)
    assert page(db, search="LIB") == (1, ["library"])
    assert page(db, search="10.0.0.3") == (1, ["gym"])
    assert page(db, search="office_") == (1, ["office_1"])
    assert page(db, search="%") == (0, [])  # wildcards are taken literally


def test_the_client_list_refuses_an_unknown_sort(db):
    with pytest.raises(ValueError, match="sort must be one of"), db.sessions() as session:
        client_page(session, NOW, STALE, DOWN, sort="password")


def test_crashed_clients_say_why(db):
    seed(db, hall=(5, {}), library=(10, {"process_status": "crashed"}),
         gym=(5, {"heartbeat": NOW - timedelta(seconds=200)}))
    with db.sessions() as session:
        found = {c.hostname: reason for c, reason in crashed_clients(session, NOW, STALE)}
    assert found == {"library": "process_crashed", "gym": "heartbeat_stale"}


def test_the_overview_counts_in_one_go(db):
    seed(db, **FLEET)
    with db.sessions() as session:
        assert fleet_overview(session, NOW, STALE, DOWN) == {
            "total": 5, "alive": 3, "stale": 1, "down": 1, "processCrashed": 1,
            "serviceFailedOpen": 1}


def test_the_overview_of_an_empty_fleet_is_all_zero(db):
    with db.sessions() as session:
        assert set(fleet_overview(session, NOW, STALE, DOWN).values()) == {0}


def test_acknowledging_an_alert_records_who_audits_and_raises_an_event(db):
    seed(db, **FLEET)
    cafeteria = uuid(5)
    with db.sessions() as session, session.begin():
        acknowledge_service_failed(session, cafeteria, actor="olga", now=NOW)
    with db.sessions() as session:
        client = session.get(Client, cafeteria)
        assert not client.service_failed_open
        assert (client.service_failed_acknowledged_by,
                client.service_failed_acknowledged_at) == ("olga", NOW)
        assert open_service_failed(session) == []
        audit = session.scalar(select(AuditEntry))
        assert (audit.actor, audit.action, audit.target) == ("olga",
                                                            "service_failed.acknowledge",
                                                            cafeteria)
    with db.sessions() as session:
        total, events = event_page(session, client_uuid=cafeteria)
        assert total == 1 and events[0].type == "service_failed_acknowledged"


@pytest.mark.parametrize("which", ["unknown", "no_alert"])
def test_it_rejects_acknowledging_nothing_and_writes_nothing(db, which):
    seed(db, **FLEET)
    target = "00000000-0000-0000-0000-999999999999" if which == "unknown" else uuid(1)
    with pytest.raises(FleetError), db.sessions() as session, session.begin():
        acknowledge_service_failed(session, target, actor="olga", now=NOW)
    with db.sessions() as session:
        assert session.scalar(select(AuditEntry)) is None
        assert session.scalar(select(Event)) is None


def test_events_page_newest_first(db):
    seed(db, **FLEET)
    with db.sessions() as session, session.begin():
        for minutes in (1, 3, 2):
            session.add(Event(type=f"t{minutes}", severity="info", client_uuid=uuid(1),
                              occurred_at=NOW - timedelta(minutes=minutes), details={}))
    with db.sessions() as session:
        total, events = event_page(session, per_page=2)
        assert total == 3 and [e.type for e in events] == ["t1", "t2"]

"""apply_batch against real databases: registration, health, alerts, presence, logs, counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core.contract import parse_message
from core.ingest import apply_batch
from core.models import Client, ClientCommand, ClientLog, Event, IngestRejection

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SCREEN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER = "9b2c1f3e-0d4a-4c5b-8e7f-1a2b3c4d5e6f"


def msg(suffix: str, payload, at: datetime = T0, uuid: str = SCREEN):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(f"infoscreen/{uuid}/{suffix}", raw, at)


def write(db, *items, log_cap: int = 1000):
    with db.sessions() as session, session.begin():
        return apply_batch(session, list(items), now=T0, log_cap=log_cap)


def client(db, uuid: str = SCREEN) -> Client | None:
    with db.sessions() as session:
        return session.get(Client, uuid)


def events(db) -> list[tuple[str, str | None]]:
    with db.sessions() as session:
        return [(e.type, e.client_uuid) for e in session.scalars(select(Event).order_by(Event.id))]


def count(db, model) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


DISCOVERY = {"uuid": SCREEN, "hostname": "screen-hall", "ip": "10.0.0.7",
             "software_version": "2025.3.1", "group_id": "entrance"}


def test_discovery_registers_a_client(db):
    result = write(db, msg("discovery", DISCOVERY))
    c = client(db)
    assert (c.hostname, c.ip, c.software_version, c.reported_group_id) == (
        "screen-hall", "10.0.0.7", "2025.3.1", "entrance")
    assert c.first_seen_at == c.last_seen_at == T0
    assert result.registered == 1
    assert events(db) == [("client_registered", SCREEN)]


def test_the_first_heartbeat_of_an_unknown_client_registers_it(db):
    write(db, msg("heartbeat", {}))
    c = client(db)
    assert c.last_heartbeat_at == T0 and c.hostname is None


def test_later_messages_move_last_seen_but_never_first_seen(db):
    write(db, msg("heartbeat", {}))
    write(db, msg("heartbeat", {}, T0 + timedelta(seconds=30)))
    c = client(db)
    assert c.first_seen_at == T0
    assert c.last_seen_at == c.last_heartbeat_at == T0 + timedelta(seconds=30)
    assert [e for e, _ in events(db)] == ["client_registered"]


def test_a_late_batch_does_not_move_times_backwards(db):
    write(db, msg("heartbeat", {}, T0 + timedelta(seconds=30)))
    write(db, msg("heartbeat", {}, T0))  # another listener's older batch committing late
    assert client(db).last_heartbeat_at == T0 + timedelta(seconds=30)


HEALTH = {"timestamp": "2026-11-24T12:00:00Z", "process_status": "crashed", "cpu_percent": 99,
          "broker_connection": {"reconnect_count": 7, "last_disconnect_at": "2026-11-24T11:00:00Z"}}


def test_health_updates_process_status_and_reconnect_figures(db):
    write(db, msg("health", HEALTH))
    c = client(db)
    assert c.process_status == "crashed" and c.process_status_at == T0
    assert c.mqtt_reconnect_count == 7
    assert c.mqtt_last_disconnect_at == datetime(2026, 11, 24, 11, tzinfo=UTC)
    assert c.health["cpu_percent"] == 99


def test_an_older_health_report_does_not_override_a_newer_one(db):
    write(db, msg("health", {**HEALTH, "process_status": "running"}, T0 + timedelta(seconds=5)))
    write(db, msg("health", HEALTH, T0))
    assert client(db).process_status == "running"


def test_the_last_message_of_a_batch_wins_for_each_client(db):
    write(
        db,
        msg("health", {**HEALTH, "process_status": "crashed"}, T0),
        msg("health", {**HEALTH, "process_status": "running"}, T0 + timedelta(seconds=1)),
        msg("heartbeat", {}, T0 + timedelta(seconds=2), uuid=OTHER),
    )
    assert client(db).process_status == "running"
    assert client(db, OTHER).last_heartbeat_at == T0 + timedelta(seconds=2)


FAILED = {"unit": "infoscreen-player.service", "failed_at": "2026-11-24T11:50:00Z", "exit_code": 3}


def test_service_failed_raises_an_alert_and_an_event(db):
    write(db, msg("service_failed", FAILED))
    c = client(db)
    assert c.service_failed_open
    assert c.service_failed_unit == "infoscreen-player.service"
    assert c.service_failed_exit_code == 3
    assert ("service_failed", SCREEN) in events(db)


def acknowledge(db, by: str = "alice") -> None:
    with db.sessions() as session, session.begin():
        c = session.get(Client, SCREEN)
        c.service_failed_acknowledged_at = T0
        c.service_failed_acknowledged_by = by


def test_an_acknowledged_alert_is_not_raised_again_by_the_same_retained_report(db):
    write(db, msg("service_failed", FAILED))
    acknowledge(db)
    write(db, msg("service_failed", FAILED, T0 + timedelta(minutes=5)))  # listener restarted
    c = client(db)
    assert not c.service_failed_open
    assert c.service_failed_acknowledged_by == "alice"
    assert [e for e, _ in events(db)].count("service_failed") == 1


def test_a_new_failure_raises_the_alert_again(db):
    write(db, msg("service_failed", FAILED))
    acknowledge(db)
    write(db, msg("service_failed", {**FAILED, "failed_at": "2026-11-24T12:10:00Z"}))
    c = client(db)
    assert c.service_failed_open and c.service_failed_acknowledged_by is None
    assert [e for e, _ in events(db)].count("service_failed") == 2


def test_an_empty_retained_payload_clears_the_alert(db):
    write(db, msg("service_failed", FAILED))
    write(db, msg("service_failed", b""))
    c = client(db)
    assert c.service_failed_at is None and not c.service_failed_open
    assert ("service_failed_cleared", SCREEN) in events(db)


def test_presence_follows_the_session_counter(db):
    write(db, msg("status", {"status": "online", "session": 5}))
    write(db, msg("status", {"status": "offline", "session": 4}, T0 + timedelta(seconds=1)))
    assert client(db).presence == "online"  # a late Last Will of an older session
    write(db, msg("status", {"status": "offline", "session": 5}, T0 + timedelta(seconds=2)))
    assert client(db).presence == "offline"


def test_an_offline_status_is_not_a_sign_of_life(db):
    write(db, msg("heartbeat", {}))
    write(db, msg("status", {"status": "offline", "session": 5}, T0 + timedelta(minutes=3)))
    c = client(db)
    assert c.presence == "offline" and c.last_seen_at == T0  # the Last Will of a dead screen


def test_presence_within_one_batch_follows_the_session_counter(db):
    write(
        db,
        msg("status", {"status": "online", "session": 9}),
        msg("status", {"status": "offline", "session": 8}, T0 + timedelta(seconds=1)),
    )
    c = client(db)
    assert (c.presence, c.presence_session) == ("online", 9)


def test_logs_are_stored_with_a_cap_per_client(db):
    logs = [
        msg("logs/error", {"timestamp": "2026-11-24T11:00:00Z", "message": f"line {i}",
                           "context": {"i": i}}, T0 + timedelta(seconds=i))
        for i in range(8)
    ]
    write(db, *logs[:5], log_cap=5)
    write(db, *logs[5:], log_cap=5)
    with db.sessions() as session:
        rows = session.scalars(select(ClientLog).order_by(ClientLog.id)).all()
    assert [r.message for r in rows] == [f"line {i}" for i in range(3, 8)]
    assert rows[0].level == "error" and rows[0].context == {"i": 3}


def test_an_ack_for_an_unknown_command_is_counted_and_changes_nothing(db):
    result = write(db, msg("commands/ack", {"command_id": OTHER, "status": "accepted"}))
    assert result.acks == 0
    with db.sessions() as session:
        counted = session.get(IngestRejection, "unknown_command")
        assert counted.count == 1 and OTHER in counted.last_detail
        assert session.scalar(select(func.count()).select_from(ClientCommand)) == 0


@pytest.mark.parametrize(
    ("reason", "suffix", "payload"),
    [
        ("invalid_json", "heartbeat", b"{"),
        ("missing_field", "service_failed", {"failed_at": "2026-11-24T12:00:00Z"}),
        ("uuid_mismatch", "discovery", {**DISCOVERY, "uuid": OTHER}),
    ],
)
def test_it_rejects_bad_messages_counting_them_and_writing_nothing_else(db, reason, suffix,
                                                                         payload):
    write(db, msg(suffix, payload), msg(suffix, payload))
    with db.sessions() as session:
        counted = session.get(IngestRejection, reason)
        assert counted.count == 2 and counted.last_topic.endswith(suffix)
    assert count(db, Client) == 0
    assert count(db, Event) == 0
    assert count(db, ClientLog) == 0


def test_device_supplied_text_is_stored_verbatim(db):
    write(db, msg("service_failed", {**FAILED, "unit": "<img src=x onerror=alert(1)>"}))
    assert client(db).service_failed_unit == "<img src=x onerror=alert(1)>"


def retained(suffix: str, payload, at: datetime = T0, uuid: str = SCREEN):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(f"infoscreen/{uuid}/{suffix}", raw, at, retained=True)


def test_a_retained_copy_replayed_on_subscribe_is_not_a_sign_of_life(db):
    write(db, msg("heartbeat", {}))
    later = T0 + timedelta(minutes=10)  # the listener restarts; the broker replays its store
    write(db, retained("status", {"status": "offline", "session": 3}, later),
          retained("service_failed", FAILED, later))
    c = client(db)
    assert c.last_seen_at == T0
    assert c.presence == "offline" and c.service_failed_open


def test_a_status_without_session_keeps_the_known_session(db):
    write(db, msg("status", {"status": "online", "session": 7}))
    write(db, msg("status", {"status": "online"}, T0 + timedelta(seconds=1)))
    write(db, msg("status", {"status": "offline", "session": 6}, T0 + timedelta(seconds=2)))
    c = client(db)
    assert (c.presence, c.presence_session) == ("online", 7)


def test_an_older_service_failed_report_does_not_replace_a_newer_one(db):
    write(db, msg("service_failed", {**FAILED, "failed_at": "2026-11-24T12:10:00Z"}))
    acknowledge(db)
    write(db, msg("service_failed", FAILED))  # failed_at 11:50, arriving late
    c = client(db)
    assert c.service_failed_at == datetime(2026, 11, 24, 12, 10, tzinfo=UTC)
    assert not c.service_failed_open


def test_a_batch_of_only_retained_alerts_is_stored_for_known_and_unknown_clients(db):
    write(db, msg("heartbeat", {}))  # SCREEN is known, OTHER is not
    later = T0 + timedelta(minutes=5)
    write(db, retained("service_failed", FAILED, later),
          retained("service_failed", {**FAILED, "unit": "kiosk.service"}, later, uuid=OTHER))
    assert client(db).service_failed_open and client(db).last_seen_at == T0
    other = client(db, OTHER)
    assert other.service_failed_open and other.service_failed_unit == "kiosk.service"
    assert ("service_failed", SCREEN) in events(db) and ("service_failed", OTHER) in events(db)
    assert count(db, IngestRejection) == 0


# The deployed Infoscreen 2025 clients ------------------------------------------------------

DEPLOYED_HEALTH = {
    "expected_state": {"event_id": 12, "event_type": "presentation"},
    "actual_state": {"process_status": "crashed", "current_process": "chromium"},
    "health_metrics": {"cpu_percent": 4.0},
    "broker_connection": {"reconnect_count": 9, "last_disconnect_at": "2026-11-24T11:00:00Z"},
}


def test_the_deployed_health_shape_is_stored_with_its_figures_and_no_rejection(db):
    result = write(db, msg("health", DEPLOYED_HEALTH))
    assert (result.accepted, result.rejected) == (1, 0)
    c = client(db)
    assert (c.process_status, c.process_status_at, c.health_at) == ("crashed", T0, T0)
    assert c.mqtt_reconnect_count == 9
    assert c.health["expected_state"]["event_id"] == 12
    assert c.health["actual_state"]["current_process"] == "chromium"
    assert c.health["health_metrics"] == {"cpu_percent": 4.0}
    assert count(db, IngestRejection) == 0


def test_a_health_report_without_a_process_status_keeps_the_one_known(db):
    write(db, msg("health", DEPLOYED_HEALTH))
    later = T0 + timedelta(seconds=5)
    write(db, msg("health", {**DEPLOYED_HEALTH, "actual_state": {"status": "presenting"},
                             "broker_connection": {"reconnect_count": 10}}, later))
    c = client(db)
    assert (c.process_status, c.process_status_at) == ("crashed", T0)
    assert (c.health_at, c.mqtt_reconnect_count) == (later, 10)


def test_discovery_keeps_the_reported_group_and_capabilities(db):
    write(db, msg("discovery", {**DISCOVERY, "capabilities": ["reboot_host", "x"]}))
    c = client(db)
    assert (c.reported_group_id, c.reported_capabilities, c.group_id) == (
        "entrance", ["reboot_host"], None)
    write(db, msg("discovery", DISCOVERY, T0 + timedelta(seconds=1)))
    assert client(db).reported_capabilities is None  # a discovery describes the device whole


POWER = {"schema_version": "1.0", "intent_id": "i-1", "client_id": SCREEN,
         "reported_at": "2026-11-24T11:59:59Z",
         "power": {"applied_state": "off", "source": "local_fallback", "result": "ok",
                   "detail": "CEC standby"}}


def test_tv_power_state_is_stored_newer_wins(db):
    write(db, msg("power/state", POWER, T0 + timedelta(seconds=5)))
    on = {**POWER, "power": {**POWER["power"], "applied_state": "on"}}
    write(db, msg("power/state", on, T0))  # older, arriving late
    c = client(db)
    assert c.power_state_at == T0 + timedelta(seconds=5)
    assert c.power_state == {"appliedState": "off", "source": "local_fallback", "result": "ok",
                             "detail": "CEC standby", "intentId": "i-1",
                             "reportedAt": "2026-11-24T11:59:59+00:00"}
    assert events(db) == [("client_registered", SCREEN)]


def test_a_failed_tv_power_change_raises_one_event(db):
    failed = {**POWER, "power": {**POWER["power"], "result": "error", "detail": "no CEC"}}
    write(db, msg("power/state", failed), msg("power/state", failed))
    assert events(db) == [("client_registered", SCREEN), ("tv_power_error", SCREEN)]
    with db.sessions() as session:
        event = session.scalars(select(Event).where(Event.type == "tv_power_error")).one()
    assert event.details["detail"] == "no CEC" and event.severity == "warning"


def test_a_long_failure_text_ends_the_command_cut_and_counted(db):
    write(db, msg("discovery", DISCOVERY))
    with db.sessions() as session, session.begin():
        session.add(ClientCommand(
            id=OTHER, client_uuid=SCREEN, action="reboot_host", state="execution_started",
            reason="r", requested_by="olga", issued_at=T0, expires_at=T0 + timedelta(minutes=5),
            completion_seconds=300))
    long = {"command_id": OTHER, "status": "failed", "error_code": "E" * 130,
            "error_message": "m" * 4500}
    write(db, msg("commands/ack", long), msg("command/ack", long))
    with db.sessions() as session:
        command = session.get(ClientCommand, OTHER)
        counted = session.get(IngestRejection, "text_truncated")
    assert command.state == "failed"
    assert (len(command.error_code), len(command.error_message)) == (128, 4000)
    assert counted.count == 2

"""The pure parser of device messages: every kind accepted, every rejection reason named."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from core import contract
from core.contract import Message, Rejection, parse_message

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OTHER = "9b2c1f3e-0d4a-4c5b-8e7f-1a2b3c4d5e6f"


def parse(suffix: str, payload, uuid: str = UUID, **kw) -> Message | Rejection:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(f"infoscreen/{uuid}/{suffix}", raw, NOW, **kw)


VALID = {
    "discovery": {"uuid": UUID, "hostname": "screen-hall", "ip": "10.0.0.7",
                  "software_version": "2025.3.1", "hardware": {"model": "Pi 4"}, "group_id": 3},
    "heartbeat": {"timestamp": "2026-11-24T11:59:59Z"},
    "health": {"timestamp": "2026-11-24T11:59:59Z", "process_status": "running",
               "cpu_percent": 12.5,
               "broker_connection": {"reconnect_count": 2,
                                     "last_disconnect_at": "2026-11-24T10:00:00+00:00"}},
    "service_failed": {"unit": "infoscreen-player.service", "failed_at": "2026-11-24T11:00:00Z",
                       "exit_code": 1, "message": "start request repeated too quickly"},
    "commands/ack": {"command_id": OTHER, "status": "accepted"},
    "command/ack": {"command_id": OTHER, "status": "completed"},
    "logs/error": {"timestamp": "2026-11-24T11:59:00Z", "message": "player died",
                   "context": {"pid": 42}},
    "logs/warn": {"timestamp": "2026-11-24T11:59:00Z", "message": "slow"},
    "logs/info": {"timestamp": "2026-11-24T11:59:00Z", "message": "ok", "context": {}},
    "status": {"status": "online", "session": 4},
    "power/state": {"schema_version": "1.0", "intent_id": "i-1", "client_id": UUID,
                    "reported_at": "2026-11-24T11:59:58Z",
                    "power": {"applied_state": "off", "source": "local_fallback", "result": "ok",
                              "detail": "CEC standby"}},
}
# A health message as the deployed Infoscreen 2025 clients send it: no top-level timestamp
# or process status.
DEPLOYED_HEALTH = {
    "expected_state": {"event_id": 12, "event_type": "presentation"},
    "actual_state": {"process_status": "crashed", "current_process": "chromium",
                     "process_pid": None, "restart_count": 3},
    "health_metrics": {"cpu_percent": 4.0, "temperature_c": 51.2},
    "broker_connection": {"reconnect_count": 7, "last_disconnect_at": "2026-11-24T09:00:00Z"},
}


@pytest.mark.parametrize("suffix", sorted(VALID))
def test_it_accepts_every_topic_of_the_contract(suffix):
    result = parse(suffix, VALID[suffix])
    assert isinstance(result, Message), result
    assert result.client_uuid == UUID
    assert result.received_at == NOW


def test_it_keeps_the_health_document_and_reconnect_figures():
    m = parse("health", VALID["health"])
    assert m.raw["cpu_percent"] == 12.5
    assert m.payload.broker_connection.reconnect_count == 2
    assert m.payload.broker_connection.last_disconnect_at == datetime(2026, 11, 24, 10, tzinfo=UTC)


def test_it_accepts_the_deployed_clients_health_shape():
    m = parse("health", DEPLOYED_HEALTH)
    assert isinstance(m, Message), m
    assert m.payload.timestamp is None
    assert m.payload.reported_process_status() == "crashed"
    assert m.payload.broker_connection.reconnect_count == 7
    assert m.raw["health_metrics"]["temperature_c"] == 51.2


@pytest.mark.parametrize(("document", "status"), [
    ({"process_status": "stopped", "actual_state": {"process_status": "crashed"}}, "stopped"),
    ({"actual_state": {"process_status": "Running"}}, "running"),
    ({"actual_state": {"status": "crashed"}}, "crashed"),
    ({"actual_state": "starting"}, "starting"),
    ({"actual_state": {"status": "presenting"}}, None),  # unknown: leave the status unchanged
    ({"actual_state": {"process_status": 3}}, None),
    ({"actual_state": [1, 2]}, None),
    ({}, None),
])
def test_it_finds_the_process_status_where_each_kind_of_client_puts_it(document, status):
    m = parse("health", document)
    assert isinstance(m, Message), m
    assert m.payload.reported_process_status() == status


def test_it_cuts_long_ack_error_texts_and_says_so():
    long = {"command_id": OTHER, "status": "failed", "error_code": "E" * 200,
            "error_message": "x" * 5000}
    m = parse("commands/ack", long)
    assert isinstance(m, Message) and m.truncated
    assert len(m.payload.error_code) == 128 and len(m.payload.error_message) == 4000
    fits = parse("commands/ack", {**long, "error_code": "E" * 128, "error_message": "x" * 4000})
    assert not fits.truncated and len(fits.payload.error_message) == 4000


def test_it_keeps_the_capabilities_it_knows_from_discovery():
    m = parse("discovery", {**VALID["discovery"],
                            "capabilities": ["restart_app", "reboot_host", "dance"]})
    assert m.payload.known_capabilities() == ["reboot_host", "restart_app"]
    assert parse("discovery", VALID["discovery"]).payload.known_capabilities() is None


def test_it_reads_tv_power_state():
    m = parse("power/state", VALID["power/state"])
    assert m.kind == contract.POWER_STATE
    assert (m.payload.power.applied_state, m.payload.power.result) == ("off", "ok")


def test_it_takes_naive_timestamps_as_utc():
    m = parse("heartbeat", {"timestamp": "2026-11-24T11:59:59"})
    assert m.payload.timestamp.tzinfo is not None


def test_it_reads_an_empty_service_failed_as_cleared():
    m = parse("service_failed", b"")
    assert isinstance(m, Message) and m.payload is None


def test_it_accepts_plain_text_presence():
    assert parse("status", b"offline").payload.status == "offline"


def test_it_keeps_group_ids_that_arrive_as_numbers_as_text():
    assert parse("discovery", VALID["discovery"]).payload.group_id == "3"


def test_it_ignores_unknown_keys_so_clients_may_add_fields():
    assert isinstance(parse("heartbeat", {"timestamp": None, "firmware": "x"}), Message)


REJECTIONS = [
    ("payload_too_large", "heartbeat", b"{" + b" " * 70_000 + b"}", UUID),
    ("unknown_topic", "logs/debug", VALID["logs/info"], UUID),
    ("unknown_topic", "commands", {"command_id": OTHER}, UUID),
    ("invalid_client_id", "heartbeat", {}, "screen-1"),
    ("invalid_json", "heartbeat", b"{not json", UUID),
    ("invalid_json", "heartbeat", b"\xff\xfe", UUID),
    ("not_an_object", "heartbeat", b"[1, 2]", UUID),
    ("not_an_object", "health", b"42", UUID),
    ("missing_field", "power/state", {"client_id": UUID}, UUID),
    ("invalid_value", "power/state",
     {"power": {"applied_state": "standby", "result": "ok"}}, UUID),
    ("uuid_mismatch", "power/state", {**VALID["power/state"], "client_id": OTHER}, UUID),
    ("wrong_type", "discovery", {**VALID["discovery"], "capabilities": "reboot_host"}, UUID),
    ("missing_field", "discovery", {"uuid": UUID, "hostname": "h"}, UUID),
    ("missing_field", "service_failed", {"failed_at": "2026-11-24T11:00:00Z"}, UUID),
    ("wrong_type", "health", {"timestamp": "2026-11-24T11:59:59Z", "process_status": 5}, UUID),
    ("wrong_type", "health", {**VALID["health"], "broker_connection": {"reconnect_count": "x"}},
     UUID),
    ("wrong_type", "heartbeat", {"timestamp": "yesterday"}, UUID),
    ("wrong_type", "logs/info", {"timestamp": "2026-11-24T11:59:00Z", "message": ["a"]}, UUID),
    ("invalid_value", "health", {**VALID["health"], "process_status": "exploded"}, UUID),
    ("invalid_value", "commands/ack", {"command_id": "nope", "status": "accepted"}, UUID),
    ("invalid_value", "commands/ack", {"command_id": OTHER, "status": "maybe"}, UUID),
    ("invalid_value", "health",
     {**VALID["health"], "broker_connection": {"reconnect_count": -1}}, UUID),
    ("invalid_value", "service_failed", {"unit": "", "failed_at": "2026-11-24T11:00:00Z"}, UUID),
    ("uuid_mismatch", "discovery", {**VALID["discovery"], "uuid": OTHER}, UUID),
    ("uuid_mismatch", "heartbeat", {"client_uuid": OTHER}, UUID),
    ("uuid_mismatch", "discovery", {**VALID["discovery"], "uuid": ""}, UUID),
    ("uuid_mismatch", "heartbeat", {"uuid": UUID, "client_uuid": OTHER}, UUID),
    ("invalid_value", "service_failed", {**VALID["service_failed"], "exit_code": 2**40}, UUID),
    ("invalid_value", "health",
     {**VALID["health"], "broker_connection": {"reconnect_count": 2**70}}, UUID),
    ("invalid_value", "status", {"status": "online", "session": 2**64}, UUID),
]


@pytest.mark.parametrize(("reason", "suffix", "payload", "uuid"), REJECTIONS,
                         ids=[f"{r[0]}-{r[1]}" for r in REJECTIONS])
def test_it_rejects_bad_input_with_a_named_reason(reason, suffix, payload, uuid):
    result = parse(suffix, payload, uuid)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.reason in contract.REJECTION_REASONS
    assert len(result.excerpt) <= 121


def test_it_rejects_topics_outside_the_prefix():
    assert parse_message("other/x/heartbeat", b"{}", NOW).reason == "unknown_topic"
    assert parse_message("infoscreen", b"{}", NOW).reason == "unknown_topic"


def test_it_honours_a_configured_size_limit():
    big = json.dumps({"timestamp": None, "pad": "x" * 600}).encode()
    assert parse("heartbeat", big, max_payload_bytes=512).reason == "payload_too_large"
    assert isinstance(parse("heartbeat", big, max_payload_bytes=1024), Message)


def test_subscriptions_cover_every_client_topic():
    topics = contract.subscription_topics("infoscreen")
    for suffix in VALID:
        topic = f"infoscreen/{UUID}/{suffix}"
        assert any(_matches(f, topic) for f in topics), suffix


def _matches(topic_filter: str, topic: str) -> bool:
    f, t = topic_filter.split("/"), topic.split("/")
    return len(f) == len(t) and all(a in ("+", b) for a, b in zip(f, t, strict=True))

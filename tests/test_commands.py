"""The command lifecycle rules in core.commands, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core import commands
from core.commands import Ack, CommandLocked, CommandPolicy, NotCancellable
from core.config import Settings
from core.fleet import UnknownClient
from core.models import Client, ClientCommand, CommandLock, CommandTransition, Event

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HALL = "00000000-0000-0000-0000-000000000001"
GYM = "00000000-0000-0000-0000-000000000002"
POLICY = CommandPolicy.from_settings(Settings())  # expiry 300 s, lockout 300 s


def seed(db) -> None:
    with db.sessions() as session, session.begin():
        for uuid in (HALL, GYM):
            session.add(Client(uuid=uuid, first_seen_at=NOW, last_seen_at=NOW))


@pytest.fixture
def fleet(db):
    seed(db)
    return db


def issue(db, uuid=HALL, action="restart_app", at=NOW, **kw) -> ClientCommand:
    with db.sessions() as session, session.begin():
        return commands.issue_command(
            session, at, POLICY, client_uuid=uuid, action=action, reason="frozen",
            requested_by=kw.pop("by", "olga"), **kw,
        )


def ack(db, command_id, *statuses, uuid=HALL, at=NOW, **kw):
    with db.sessions() as session, session.begin():
        return commands.apply_acks(
            session, [Ack(uuid, command_id, s, at, **kw) for s in statuses]
        )


def load(db, command_id) -> ClientCommand:
    with db.sessions() as session:
        return session.get(ClientCommand, command_id)


def states(db, command_id) -> list[tuple[str, str]]:
    with db.sessions() as session:
        return [(t.state, t.source) for t in commands.history(session, command_id)]


def count(db, model) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_command_is_queued_with_its_deadlines(fleet):
    command = issue(fleet)
    stored = load(fleet, command.id)
    assert stored.state == "queued"
    assert stored.expires_at == NOW + timedelta(seconds=300)
    assert stored.completion_seconds == 120
    assert states(fleet, command.id) == [("queued", "api")]


def test_the_payload_is_exactly_the_v1_schema(fleet):
    command = issue(fleet)
    payload = commands.command_payload(load(fleet, command.id))
    assert payload == {
        "schema_version": "1.0",
        "command_id": command.id,
        "client_uuid": HALL,
        "action": "restart_app",
        "issued_at": "2026-11-24T12:00:00.000Z",
        "expires_at": "2026-11-24T12:05:00.000Z",
        "requested_by": "olga",
        "reason": "frozen",
    }


def test_it_rejects_a_command_for_an_unknown_client(fleet):
    with pytest.raises(UnknownClient):
        issue(fleet, uuid="00000000-0000-0000-0000-00000000dead")
    assert count(fleet, ClientCommand) == count(fleet, CommandLock) == 0


def test_it_rejects_an_unknown_action(fleet):
    with pytest.raises(commands.CommandError, match="unknown action 'format_disk'"):
        issue(fleet, action="format_disk")
    assert count(fleet, ClientCommand) == 0


def test_lockout_refuses_a_second_command_while_the_first_is_open(fleet):
    first = issue(fleet)
    with pytest.raises(CommandLocked) as refused:
        issue(fleet, action="reboot_host", at=NOW + timedelta(seconds=400))
    assert refused.value.blocking_id == first.id
    # Open until it expires at +300 s; the lockout window ended at +300 s too.
    assert refused.value.retry_after == 1
    assert count(fleet, ClientCommand) == 1


def test_lockout_holds_for_the_window_after_a_completed_command(fleet):
    first = issue(fleet)
    ack(fleet, first.id, "accepted", "execution_started", "completed",
        at=NOW + timedelta(seconds=5))
    with pytest.raises(CommandLocked) as refused:
        issue(fleet, at=NOW + timedelta(seconds=100))
    assert refused.value.retry_after == 200
    assert "was issued less than the lockout ago" in str(refused.value)
    later = issue(fleet, at=NOW + timedelta(seconds=300))
    assert load(fleet, later.id).state == "queued"


def test_lockout_is_per_client(fleet):
    issue(fleet, uuid=HALL)
    issue(fleet, uuid=GYM)
    assert count(fleet, ClientCommand) == 2


def test_an_open_command_of_another_client_does_not_lock_a_client_past_its_window(fleet):
    # Both clients have a lock row; only HALL's command is open.
    old = issue(fleet, uuid=GYM)
    ack(fleet, old.id, "completed", uuid=GYM, at=NOW + timedelta(seconds=5))
    issue(fleet, uuid=HALL, at=NOW + timedelta(seconds=290))
    later = issue(fleet, uuid=GYM, at=NOW + timedelta(seconds=300))
    assert load(fleet, later.id).state == "queued"


def test_force_overrides_the_lockout(fleet):
    issue(fleet)
    forced = issue(fleet, action="reboot_host", force=True, by="ada")
    assert load(fleet, forced.id).forced
    with fleet.sessions() as session:
        assert session.get(CommandLock, HALL).command_id == forced.id


def test_acks_move_the_command_forward_and_keep_each_time(fleet):
    command = issue(fleet)
    t = NOW + timedelta(seconds=1)
    result = ack(fleet, command.id, "accepted", at=t)
    assert result.applied == 1
    ack(fleet, command.id, "execution_started", at=t + timedelta(seconds=1))
    ack(fleet, command.id, "completed", at=t + timedelta(seconds=2))
    stored = load(fleet, command.id)
    assert stored.state == "completed"
    assert stored.accepted_at == t
    assert stored.execution_started_at == t + timedelta(seconds=1)
    assert stored.completed_at == stored.finished_at == t + timedelta(seconds=2)
    assert stored.completion_due_at == t + timedelta(seconds=120)
    assert states(fleet, command.id) == [
        ("queued", "api"), ("accepted", "device"), ("execution_started", "device"),
        ("completed", "device"),
    ]
    with fleet.sessions() as session:
        assert session.scalars(select(Event.type)).all() == ["command_completed"]


def test_duplicate_and_out_of_order_acks_change_nothing(fleet):
    command = issue(fleet)
    ack(fleet, command.id, "accepted", "completed")
    result = ack(fleet, command.id, "accepted", "execution_started", "completed", "failed")
    assert (result.applied, result.ignored) == (0, 4)
    stored = load(fleet, command.id)
    assert stored.state == "completed" and stored.execution_started_at is None
    assert len(states(fleet, command.id)) == 3


def test_a_failed_ack_keeps_the_error(fleet):
    command = issue(fleet)
    ack(fleet, command.id, "accepted", "failed", error_code="busy", error_message="player busy")
    stored = load(fleet, command.id)
    assert (stored.state, stored.error_code, stored.error_message) == ("failed", "busy",
                                                                       "player busy")


def test_acks_for_unknown_or_foreign_commands_are_returned_for_counting(fleet):
    command = issue(fleet, uuid=GYM)
    result = ack(fleet, command.id, "accepted")  # HALL acks GYM's command
    unknown_id = "11111111-1111-4111-8111-111111111111"
    result2 = ack(fleet, unknown_id, "accepted")
    assert [a.command_id for a in result.unknown] == [command.id]
    assert [a.command_id for a in result2.unknown] == [unknown_id]
    assert load(fleet, command.id).state == "queued"


def test_a_puback_marks_it_sent_once(fleet):
    command = issue(fleet)
    with fleet.sessions() as session, session.begin():
        assert commands.mark_sent(session, command.id, NOW)
    with fleet.sessions() as session, session.begin():
        assert not commands.mark_sent(session, command.id, NOW + timedelta(seconds=1))
    stored = load(fleet, command.id)
    assert (stored.state, stored.sent_at) == ("sent", NOW)


def test_a_puback_after_the_ack_keeps_the_state_and_records_the_time(fleet):
    command = issue(fleet)
    ack(fleet, command.id, "accepted", at=NOW + timedelta(milliseconds=5))
    with fleet.sessions() as session, session.begin():
        assert not commands.mark_sent(session, command.id, NOW + timedelta(milliseconds=3))
    stored = load(fleet, command.id)
    assert (stored.state, stored.sent_at) == ("accepted", NOW + timedelta(milliseconds=3))


def sweep(db, at):
    with db.sessions() as session, session.begin():
        return commands.sweep_expired_commands(session, at)


def test_the_sweep_expires_commands_nobody_accepted(fleet):
    queued = issue(fleet, uuid=HALL)
    sent = issue(fleet, uuid=GYM)
    with fleet.sessions() as session, session.begin():
        commands.mark_sent(session, sent.id, NOW)
    sweep(fleet, NOW + timedelta(seconds=299))
    assert load(fleet, queued.id).state == "queued"
    sweep(fleet, NOW + timedelta(seconds=300))
    assert load(fleet, queued.id).state == load(fleet, sent.id).state == "expired"
    assert states(fleet, queued.id)[-1] == ("expired", "sweep")
    with fleet.sessions() as session:
        assert sorted(session.scalars(select(Event.type))) == ["command_expired"] * 2


def test_the_sweep_times_out_accepted_commands_without_an_outcome(fleet):
    command = issue(fleet, action="reboot_host")  # completion window 300 s
    ack(fleet, command.id, "accepted", at=NOW + timedelta(seconds=10))
    sweep(fleet, NOW + timedelta(seconds=305))  # past expires_at, but it was accepted
    assert load(fleet, command.id).state == "accepted"
    sweep(fleet, NOW + timedelta(seconds=310))
    assert load(fleet, command.id).state == "timed_out"


def test_the_sweep_is_idempotent(fleet):
    command = issue(fleet)
    sweep(fleet, NOW + timedelta(seconds=301))
    sweep(fleet, NOW + timedelta(seconds=302))
    assert states(fleet, command.id) == [("queued", "api"), ("expired", "sweep")]
    ack(fleet, command.id, "completed")  # a late ack
    assert load(fleet, command.id).state == "expired"


def test_the_sweep_works_in_chunks(fleet, monkeypatch):
    monkeypatch.setattr(commands, "SWEEP_CHUNK", 1)
    issue(fleet, uuid=HALL)
    issue(fleet, uuid=GYM)
    later = NOW + timedelta(seconds=301)
    assert sweep(fleet, later) is True
    assert sweep(fleet, later) is True
    assert sweep(fleet, later) is False
    with fleet.sessions() as session:
        assert session.scalar(select(func.count()).where(ClientCommand.state == "expired")) == 2


def test_only_a_queued_command_can_be_cancelled(fleet):
    command = issue(fleet)
    with fleet.sessions() as session, session.begin():
        commands.cancel_command(session, NOW, command.id, "olga")
    assert load(fleet, command.id).state == "cancelled"
    with fleet.sessions() as session, session.begin(), pytest.raises(NotCancellable):
        commands.cancel_command(session, NOW, command.id, "olga")


def test_the_dispatcher_claims_queued_commands_once_per_retry_interval(fleet):
    api = issue(fleet, uuid=HALL)  # published by the API at once
    auto = issue(fleet, uuid=GYM, dispatch_now=False, by="auto-recovery")
    with fleet.sessions() as session, session.begin():
        due = commands.commands_to_dispatch(session, NOW, retry_after=10)
    assert [c.id for c in due] == [auto.id]
    with fleet.sessions() as session, session.begin():
        assert commands.commands_to_dispatch(session, NOW + timedelta(seconds=5),
                                             retry_after=10) == []
    with fleet.sessions() as session, session.begin():
        due = commands.commands_to_dispatch(session, NOW + timedelta(seconds=10), retry_after=10)
    assert sorted(c.id for c in due) == sorted([api.id, auto.id])
    assert count(fleet, CommandTransition) == 2


# Capabilities ------------------------------------------------------------------------------


def set_client(db, uuid=HALL, **values) -> None:
    with db.sessions() as session, session.begin():
        client = session.get(Client, uuid)
        for name, value in values.items():
            setattr(client, name, value)


def test_an_unsupported_action_is_refused_before_the_lockout(fleet):
    from core.capabilities import ActionNotSupported

    set_client(fleet, reported_capabilities=["reboot_host", "shutdown_host"])
    with pytest.raises(ActionNotSupported, match="does not support restart_app"):
        issue(fleet, action="restart_app")
    assert count(fleet, ClientCommand) == count(fleet, CommandLock) == 0
    assert issue(fleet, action="restart_app", force=True).forced  # an admin may force it


@pytest.mark.parametrize(("code", "action", "learned"), [
    ("unsupported_action", "restart_app", True),
    ("unsupported_action", "reboot_host", True),
    ("invalid_command", "restart_app", True),
    ("unsupported_schema_version", "restart_app", True),
    ("invalid_command", "reboot_host", False),  # in the frozen schema: not a capability
    ("busy", "restart_app", False),
])
def test_a_failed_ack_teaches_what_the_client_cannot_do(fleet, code, action, learned):
    from core.capabilities import supported_actions

    command = issue(fleet, action=action)
    ack(fleet, command.id, "failed", error_code=code, error_message="no")
    ack(fleet, command.id, "failed", error_code=code, error_message="no")  # the alias topic
    with fleet.sessions() as session:
        client = session.get(Client, HALL)
        can, source = supported_actions(client, POLICY.default_actions)
        taught = session.scalars(select(Event).where(Event.type == "capability_learned")).all()
    assert (action not in can) is learned
    assert source == ("learned" if learned else "default")
    assert [e.details["action"] for e in taught] == ([action] if learned else [])
    # The device did nothing: a refusal of what it cannot do does not hold the lockout.
    assert (count(fleet, CommandLock) == 0) is learned


def test_capability_sources_go_strongest_first(fleet):
    from core.capabilities import supported_actions
    from core.models import Group

    with fleet.sessions() as session, session.begin():
        session.add(Group(id=1, name="hall", created_at=NOW, supported_actions=["reboot_host"]))
    set_client(fleet, unsupported_actions=["restart_app"])

    def source():
        with fleet.sessions() as session:
            return supported_actions(session.get(Client, HALL), POLICY.default_actions)

    assert source() == (["reboot_host", "shutdown_host"], "learned")
    set_client(fleet, reported_capabilities=["restart_app"])
    assert source() == (["restart_app"], "discovery")
    set_client(fleet, group_id=1)
    assert source() == (["reboot_host"], "group")
    set_client(fleet, supported_actions=["shutdown_host", "reboot_host"])
    assert source() == (["reboot_host", "shutdown_host"], "admin")


# Group commands ----------------------------------------------------------------------------


def test_group_commands_run_at_most_the_cap_at_once(fleet):
    from core.models import Group

    members = [f"00000000-0000-0000-0000-0000000001{i:02d}" for i in range(5)]
    with fleet.sessions() as session, session.begin():
        session.add(Group(id=7, name="gym", created_at=NOW))
        session.add_all(Client(uuid=u, first_seen_at=NOW, last_seen_at=NOW, group_id=7)
                        for u in members)
    policy = CommandPolicy.from_settings(Settings(GROUP_COMMAND_MAX_PARALLEL=2))
    ids = [issue(fleet, uuid=u, action="reboot_host", group_id=7).id for u in members]

    def release(at):
        with fleet.sessions() as session, session.begin():
            return [c.id for c in commands.release_group_commands(session, at, policy, 7)]

    def held():
        return [i for i in ids if load(fleet, i).held]

    assert held() == ids
    later = NOW + timedelta(seconds=POLICY.expiry_seconds + 60)  # held ones do not expire
    sweep(fleet, later)
    assert release(later) == ids[:2] and release(later) == []
    assert load(fleet, ids[0]).expires_at == later + timedelta(seconds=POLICY.expiry_seconds)
    with fleet.sessions() as session, session.begin():  # the dispatcher leaves held ones
        due = commands.commands_to_dispatch(session, later, retry_after=10)
    assert sorted(c.id for c in due) == sorted(ids[:2])
    ack(fleet, ids[0], "accepted", "completed", uuid=members[0], at=later)
    assert release(later) == ids[2:3]
    assert held() == ids[3:]

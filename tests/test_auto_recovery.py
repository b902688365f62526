"""Auto-recovery (scheduler.recovery): restart, escalate, give up, cap and brake, lockout.

Time passes by calling the job with later `now` values; in between, commands expire through
the sweep or complete through device acks, as they would in the scheduler's cycle.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from core import commands
from core.commands import AUTO_RECOVERY, Ack, CommandPolicy
from core.config import Settings
from core.models import Client, ClientCommand, Event
from scheduler.recovery import AutoRecovery, RecoveryRules

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HALL = "00000000-0000-0000-0000-000000000001"
GYM = "00000000-0000-0000-0000-000000000002"
POLICY = CommandPolicy.from_settings(Settings())  # expiry 300 s, lockout 300 s
RULES = RecoveryRules.from_settings(Settings())  # 3 restarts in 3600 s, 10/min, brake 20 %
LOCKOUT = POLICY.lockout_seconds


def seconds(n: float) -> datetime:
    return NOW + timedelta(seconds=n)


def recovery(**rules) -> AutoRecovery:
    return AutoRecovery(replace(RULES, **rules), POLICY)


def add(db, uuid: str, *, process_status: str | None = "crashed", seen: datetime = NOW,
        liveness: str | None = "alive", crashed_at: datetime = NOW) -> None:
    with db.sessions() as session, session.begin():
        session.add(Client(uuid=uuid, first_seen_at=seen, last_seen_at=seen,
                           process_status=process_status, process_status_at=crashed_at,
                           liveness=liveness))


def fleet_of(db, n: int, first: int = 1, **kw) -> list[str]:
    uuids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(first, first + n)]
    for i, uuid in enumerate(uuids):
        add(db, uuid, crashed_at=seconds(-100 + i), **kw)
    return uuids


def cycle(db, job: AutoRecovery, at: datetime) -> None:
    """What the scheduler does around auto-recovery: the sweep first; the crashed screens
    keep sending heartbeats."""
    with db.sessions() as session, session.begin():
        session.execute(update(Client).where(Client.process_status == "crashed")
                        .values(last_seen_at=at - timedelta(seconds=5)))
        while commands.sweep_expired_commands(session, at):
            pass
    with db.sessions() as session, session.begin():
        assert job(session, at) is False


def issued(db, uuid: str | None = None) -> list[ClientCommand]:
    query = select(ClientCommand).order_by(ClientCommand.issued_at, ClientCommand.client_uuid)
    if uuid:
        query = query.where(ClientCommand.client_uuid == uuid)
    with db.sessions() as session:
        return list(session.scalars(query))


def events(db, *types: str) -> list[Event]:
    with db.sessions() as session:
        return list(session.scalars(
            select(Event).where(Event.type.in_(types)).order_by(Event.id)))


def staff_command(db, at: datetime, action: str = "reboot_host") -> ClientCommand:
    with db.sessions() as session, session.begin():
        return commands.issue_command(session, at, POLICY, client_uuid=HALL, action=action,
                                      reason="frozen", requested_by="olga")


def ack(db, command: ClientCommand, status: str, at: datetime) -> None:
    with db.sessions() as session, session.begin():
        commands.apply_acks(session, [Ack(command.client_uuid, command.id, status, at)])


def test_a_crashed_client_with_a_fresh_heartbeat_gets_restart_app(db):
    add(db, HALL)
    cycle(db, recovery(), seconds(10))
    [command] = issued(db)
    assert (command.client_uuid, command.action, command.state, command.requested_by) == (
        HALL, "restart_app", "queued", AUTO_RECOVERY)
    assert command.issued_at == seconds(10)
    assert command.last_dispatch_at is None  # the scheduler's dispatcher publishes it
    [event] = events(db, "auto_recovery")
    assert (event.client_uuid, event.severity, event.occurred_at) == (HALL, "warning",
                                                                      seconds(10))
    assert event.details == {"commandId": command.id, "action": "restart_app",
                             "restartsBefore": 0}
    with db.sessions() as session:
        assert [(t.state, t.source) for t in commands.history(session, command.id)] == [
            ("queued", AUTO_RECOVERY)]


def test_a_stale_crashed_client_gets_nothing(db):
    add(db, HALL, seen=NOW)
    with db.sessions() as session, session.begin():
        recovery()(session, seconds(RULES.stale_seconds))  # no heartbeat for 90 s
    assert issued(db) == []
    assert events(db, "auto_recovery") == []


def test_a_running_client_gets_nothing(db):
    add(db, HALL, process_status="running")
    add(db, GYM, process_status=None)
    cycle(db, recovery(), seconds(10))
    assert issued(db) == []


def test_a_staff_command_just_before_keeps_auto_recovery_out(db):
    add(db, HALL)
    staff = staff_command(db, seconds(5))
    ack(db, staff, "completed", seconds(6))
    cycle(db, recovery(), seconds(10))
    assert [c.id for c in issued(db)] == [staff.id]
    assert events(db, "auto_recovery") == []


def test_an_open_staff_command_past_the_window_still_keeps_auto_recovery_out(db):
    """The lock row is older than the window, so only the compare-and-set in issue_command
    sees that the reboot is still running: it refuses, and the step carries on quietly."""
    add(db, HALL)
    add(db, GYM)
    staff = staff_command(db, NOW)
    ack(db, staff, "accepted", seconds(200))  # a reboot may take 300 s from here
    at = seconds(LOCKOUT + 10)
    cycle(db, recovery(), at)
    assert [(c.client_uuid, c.requested_by) for c in issued(db)] == [
        (HALL, "olga"), (GYM, AUTO_RECOVERY)]


def test_after_max_attempts_restarts_it_escalates_to_reboot_host(db):
    add(db, HALL)
    job = recovery()
    cycle(db, job, NOW)
    ack(db, issued(db)[0], "completed", seconds(20))  # restarted; crashed again later
    for n in range(1, 4):  # the next commands are never accepted: they expire
        cycle(db, job, seconds(n * LOCKOUT - 1))  # still locked
        cycle(db, job, seconds(n * LOCKOUT))
    assert [(c.action, c.issued_at, c.state) for c in issued(db)] == [
        ("restart_app", NOW, "completed"),
        ("restart_app", seconds(LOCKOUT), "expired"),
        ("restart_app", seconds(2 * LOCKOUT), "expired"),
        ("reboot_host", seconds(3 * LOCKOUT), "queued"),
    ]
    assert [e.details["restartsBefore"] for e in events(db, "auto_recovery")] == [0, 1, 2, 3]


def test_after_a_reboot_within_the_window_it_gives_up_once(db):
    add(db, HALL)
    job = recovery(max_attempts=1)
    cycle(db, job, NOW)
    cycle(db, job, seconds(LOCKOUT))
    assert [c.action for c in issued(db)] == ["restart_app", "reboot_host"]
    for n in range(2, 12):  # up to 3300 s: inside the window
        cycle(db, job, seconds(n * LOCKOUT))
    assert [c.action for c in issued(db)] == ["restart_app", "reboot_host"]
    [given_up] = events(db, "auto_recovery_exhausted")
    assert (given_up.client_uuid, given_up.severity, given_up.occurred_at) == (
        HALL, "error", seconds(2 * LOCKOUT))
    assert given_up.details == {"restarts": 1, "reboots": 1}


def test_after_giving_up_it_tries_again_once_the_window_has_passed(db):
    add(db, HALL)
    job = recovery(max_attempts=1)
    for n in range(3):
        cycle(db, job, seconds(n * LOCKOUT))
    assert len(events(db, "auto_recovery_exhausted")) == 1
    later = seconds(2 * LOCKOUT + RULES.window_seconds)
    cycle(db, job, later)
    assert [(c.action, c.issued_at) for c in issued(db)][-1] == ("restart_app", later)


def test_the_fleet_cap_spreads_commands_over_the_minutes(db):
    crashed = fleet_of(db, 5)
    job = recovery(max_per_minute=2)
    cycle(db, job, NOW)
    assert [c.client_uuid for c in issued(db)] == crashed[:2]  # longest crashed first
    cycle(db, job, seconds(30))
    cycle(db, job, seconds(59))
    assert len(issued(db)) == 2
    cycle(db, job, seconds(60))
    assert [c.client_uuid for c in issued(db)] == crashed[:4]
    cycle(db, job, seconds(120))
    assert sorted(c.client_uuid for c in issued(db)) == crashed
    assert [c.issued_at for c in issued(db)] == [NOW] * 2 + [seconds(60)] * 2 + [seconds(120)]


def test_the_brake_holds_while_a_large_share_of_the_fleet_is_down(db):
    add(db, HALL)
    down = fleet_of(db, 4, first=2, process_status="running")[:2]
    with db.sessions() as session, session.begin():
        session.execute(update(Client).where(Client.uuid.in_(down)).values(liveness="down"))
    job = recovery()  # 2 of 5 down: 40 % > 20 %
    for n in range(3):
        cycle(db, job, seconds(10 * n))
    assert issued(db) == []
    [braked] = events(db, "auto_recovery_braked")
    assert (braked.client_uuid, braked.severity, braked.occurred_at) == (None, "warning", NOW)
    assert braked.details == {"down": 2, "total": 5, "brakePercent": 20.0}
    with db.sessions() as session, session.begin():
        session.execute(update(Client).where(Client.uuid == down[0]).values(liveness="alive"))
    cycle(db, job, seconds(60))  # 1 of 5 down is 20 %: not more than the brake
    [resumed] = events(db, "auto_recovery_resumed")
    assert (resumed.severity, resumed.occurred_at, resumed.details["down"]) == (
        "info", seconds(60), 1)
    assert [(c.client_uuid, c.issued_at) for c in issued(db)] == [(HALL, seconds(60))]
    assert len(events(db, "auto_recovery_braked")) == 1


def test_a_client_that_cannot_restart_its_app_gets_a_reboot_straight_away(db):
    add(db, HALL)
    add(db, GYM)
    with db.sessions() as session, session.begin():
        session.get(Client, HALL).unsupported_actions = ["restart_app"]  # a failed ack said so
        session.get(Client, GYM).reported_capabilities = ["shutdown_host"]  # can do neither
    cycle(db, recovery(), NOW)
    assert [(c.client_uuid, c.action) for c in issued(db)] == [(HALL, "reboot_host")]
    with db.sessions() as session:
        given_up = session.scalars(select(Event.client_uuid)
                                   .where(Event.type == "auto_recovery_exhausted")).all()
    assert given_up == [GYM]

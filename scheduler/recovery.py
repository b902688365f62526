"""Auto-recovery (DESIGN.md §6), behind CRASH_RECOVERY_ENABLED.

A client whose player crashed while its heartbeat is fresh gets `restart_app`; once
CRASH_RECOVERY_MAX_ATTEMPTS automatic restarts within the window did not help, `reboot_host`
(straight away for a client that cannot `restart_app`, such as the deployed clients);
after a reboot within the window did not help either, it is left to staff (one event). A
stale client cannot be reached over MQTT: the liveness job reports it, nothing is sent.

Commands go through `issue_command`, so the lockout binds automation exactly as it binds
staff. A fleet-wide cap per minute, and a brake while a large share of the fleet is down
(which points at the network or the broker, not the screens), keep it from making an outage
worse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from core.capabilities import supported_actions
from core.commands import AUTO_RECOVERY, CommandLocked, CommandPolicy, issue_command
from core.config import Settings
from core.events import new_event
from core.logs import ids
from core.models import Client, ClientCommand, CommandLock, Event

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryRules:
    max_attempts: int
    window_seconds: int
    max_per_minute: int
    brake_percent: float
    stale_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RecoveryRules:
        return cls(
            max_attempts=settings.crash_recovery_max_attempts,
            window_seconds=settings.crash_recovery_window_seconds,
            max_per_minute=settings.crash_recovery_max_per_minute,
            brake_percent=settings.crash_recovery_fleet_brake_percent,
            stale_seconds=settings.heartbeat_stale_seconds,
        )


class AutoRecovery:
    def __init__(self, rules: RecoveryRules, policy: CommandPolicy):
        self.rules = rules
        self.policy = policy
        self.braking = False

    def __call__(self, session: Session, now: datetime) -> bool:
        if self._brake(session, now):
            return False
        budget = self.rules.max_per_minute - (session.scalar(
            select(func.count()).select_from(ClientCommand).where(
                ClientCommand.requested_by == AUTO_RECOVERY,
                ClientCommand.issued_at > now - timedelta(minutes=1),
            )
        ) or 0)
        if budget <= 0:
            return False
        for client_uuid in self._candidates(session, now, budget):
            self._recover(session, now, client_uuid)
        return False  # the cap is per minute: the rest waits for the next cycle

    def _brake(self, session: Session, now: datetime) -> bool:
        total, down = session.execute(
            select(func.count(), func.count().filter(Client.liveness == "down"))
        ).one()
        braking = bool(total) and down * 100 > self.rules.brake_percent * total
        if braking != self.braking:
            self.braking = braking
            if braking:
                log.warning("auto-recovery braked: %d of %d clients are down", down, total)
            session.add(new_event(
                "auto_recovery_braked" if braking else "auto_recovery_resumed",
                "warning" if braking else "info", now, down=down, total=total,
                brakePercent=self.rules.brake_percent,
            ))
        return braking

    def _candidates(self, session: Session, now: datetime, limit: int) -> list[str]:
        """Crashed, heartbeat fresh, and not inside a lockout (the lockout itself is the
        real guard; this keeps the step from knocking on locked doors)."""
        lockout = now - timedelta(seconds=self.policy.lockout_seconds)
        locked = exists().where(
            CommandLock.client_uuid == Client.uuid, CommandLock.issued_at > lockout
        )
        given_up = exists().where(
            Event.client_uuid == Client.uuid, Event.type == "auto_recovery_exhausted",
            Event.occurred_at > now - timedelta(seconds=self.rules.window_seconds),
        )
        return list(session.scalars(
            select(Client.uuid)
            .where(
                Client.process_status == "crashed",
                Client.last_seen_at > now - timedelta(seconds=self.rules.stale_seconds),
                ~locked,
                ~given_up,
            )
            .order_by(Client.process_status_at)
            .limit(limit)
        ))

    def _recover(self, session: Session, now: datetime, client_uuid: str) -> None:
        since = now - timedelta(seconds=self.rules.window_seconds)
        tried = dict(session.execute(
            select(ClientCommand.action, func.count())
            .where(ClientCommand.client_uuid == client_uuid,
                   ClientCommand.requested_by == AUTO_RECOVERY,
                   ClientCommand.issued_at > since)
            .group_by(ClientCommand.action)
        ).all())
        if tried.get("reboot_host"):
            self._give_up(session, now, client_uuid, tried)
            return
        restarts = tried.get("restart_app", 0)
        client = session.get(Client, client_uuid)
        assert client is not None  # a candidate
        can, _ = supported_actions(client, self.policy.default_actions)
        if restarts < self.rules.max_attempts and "restart_app" in can:
            action = "restart_app"
        elif "reboot_host" in can:
            action = "reboot_host"
        else:
            self._give_up(session, now, client_uuid, tried)
            return
        reason = (f"auto-recovery: player crashed; {restarts} automatic restart(s) in the "
                  f"last {self.rules.window_seconds // 60} min")
        try:
            command = issue_command(
                session, now, self.policy, client_uuid=client_uuid, action=action,
                reason=reason, requested_by=AUTO_RECOVERY, dispatch_now=False,
            )
        except CommandLocked as exc:
            log.info("auto-recovery skipped %s: %s", client_uuid, exc,
                     extra=ids(client_uuid=client_uuid))
            return
        session.add(new_event("auto_recovery", "warning", now, client_uuid,
                              commandId=command.id, action=action, restartsBefore=restarts))
        log.info("auto-recovery: %s for %s (command %s)", action, client_uuid, command.id,
                 extra=ids(client_uuid=client_uuid, command_id=command.id))

    def _give_up(self, session: Session, now: datetime, client_uuid: str,
                 tried: dict[str, int]) -> None:
        # Candidates exclude clients given up on within the window: this runs once per window.
        session.add(new_event("auto_recovery_exhausted", "error", now, client_uuid,
                              restarts=tried.get("restart_app", 0),
                              reboots=tried.get("reboot_host", 0)))
        log.warning("auto-recovery gave up on %s; staff must look at it", client_uuid,
                    extra=ids(client_uuid=client_uuid))

"""The scheduler's command jobs: the expiry sweep and the dispatcher of queued commands."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core import commands
from mqtt_client.dispatch import CommandDispatcher

DISPATCH_BATCH = 500


def sweep_expired_commands(session: Session, now: datetime) -> bool:
    """Runs every cycle, whatever else happens: expired and timed-out commands get final."""
    return commands.sweep_expired_commands(session, now)


class DispatchQueuedCommands:
    """Publishes what is still queued: the scheduler's own commands (auto-recovery), and API
    commands whose first publish found no broker. A command gets one attempt per
    `retry_after` seconds until the broker takes it or it expires; the same id every time."""

    def __init__(self, dispatcher: CommandDispatcher, retry_after: float):
        self.dispatcher = dispatcher
        self.retry_after = retry_after

    def __call__(self, session: Session, now: datetime) -> bool:
        if not self.dispatcher.publisher.connected:
            return False  # claim nothing: the next cycle tries again
        due = commands.commands_to_dispatch(
            session, now, retry_after=self.retry_after, limit=DISPATCH_BATCH
        )
        for command in due:
            self.dispatcher.dispatch(command)
        return len(due) == DISPATCH_BATCH

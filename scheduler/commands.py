"""The scheduler's command jobs: the expiry sweep, the turns of group commands, the dispatcher
of queued commands, and the retained group assignments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from core import commands, groups
from core.commands import CommandPolicy
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


class ReleaseGroupCommands:
    """Gives waiting group commands their turn as the running ones of their group end."""

    def __init__(self, policy: CommandPolicy):
        self.policy = policy

    def __call__(self, session: Session, now: datetime) -> bool:
        for group_id in commands.groups_with_held_commands(session):
            commands.release_group_commands(session, now, self.policy, group_id)
        return False


class PublishGroupAssignments:
    """Publishes each screen's retained group_id until the broker took it."""

    def __init__(self, dispatcher: CommandDispatcher, retry_after: float):
        self.dispatcher = dispatcher
        self.retry_after = retry_after

    def __call__(self, session: Session, now: datetime) -> bool:
        if not self.dispatcher.publisher.connected:
            return False
        due = groups.assignments_to_publish(session, now, retry_after=self.retry_after,
                                            limit=DISPATCH_BATCH)
        for client_uuid, group_id in due:
            self.dispatcher.publish_group(client_uuid, group_id)
        return len(due) == DISPATCH_BATCH

"""What each client can do (`supportedActions`), and learning it from failed acks.

The deployed Infoscreen 2025 clients validate commands against a frozen schema that knows only
`reboot_host` and `shutdown_host`. Sources, strongest first: an admin's setting for the client,
then for its group; the `capabilities` list the device sent in discovery (our extension); the
default (DEFAULT_SUPPORTED_ACTIONS) less what failed acks showed the device cannot do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from core.contract import COMMAND_ACTIONS, FROZEN_V1_ACTIONS
from core.events import new_event
from core.models import Client, ClientCommand, CommandLock

ADMIN = "admin"
GROUP = "group"
DISCOVERY = "discovery"
LEARNED = "learned"
DEFAULT = "default"

# Error codes of a failed ack that say the device cannot do the action at all. The last two
# say so only for an action outside the frozen schema: a malformed reboot_host is our fault.
UNSUPPORTED_ACTION = "unsupported_action"
_SCHEMA_REFUSALS = frozenset({"invalid_command", "unsupported_schema_version"})


class ActionNotSupported(Exception):
    def __init__(self, client_uuid: str, action: str, supported: Sequence[str], source: str):
        can = ", ".join(supported) or "nothing"
        super().__init__(
            f"client {client_uuid} does not support {action} (it supports {can}; "
            f"from {_SOURCE_TEXT[source]}); an admin may force it"
        )
        self.action = action
        self.supported = list(supported)
        self.source = source


_SOURCE_TEXT = {
    ADMIN: "an admin's setting for the client",
    GROUP: "an admin's setting for its group",
    DISCOVERY: "the capabilities it reported in discovery",
    LEARNED: "a failed command it answered with unsupported_action",
    DEFAULT: "DEFAULT_SUPPORTED_ACTIONS",
}


def ordered(actions: Sequence[str]) -> list[str]:
    """Known actions only, in the contract's order, each once."""
    return [a for a in COMMAND_ACTIONS if a in actions]


def supported_actions(client: Client, default: Sequence[str]) -> tuple[list[str], str]:
    """The actions the client supports and which source said so."""
    if client.supported_actions is not None:
        return ordered(client.supported_actions), ADMIN
    if client.group is not None and client.group.supported_actions is not None:
        return ordered(client.group.supported_actions), GROUP
    if client.reported_capabilities is not None:
        return ordered(client.reported_capabilities), DISCOVERY
    learned = client.unsupported_actions or []
    return [a for a in ordered(default) if a not in learned], LEARNED if learned else DEFAULT


def check_supported(client: Client, action: str, default: Sequence[str]) -> None:
    supported, source = supported_actions(client, default)
    if action not in supported:
        raise ActionNotSupported(client.uuid, action, supported, source)


def shows_unsupported(action: str, error_code: str | None) -> bool:
    if error_code == UNSUPPORTED_ACTION:
        return True
    return error_code in _SCHEMA_REFUSALS and action not in FROZEN_V1_ACTIONS


def learn_from_failure(session: Session, command: ClientCommand, at: datetime) -> None:
    """A failed ack that says the device cannot do the action: remember it (one event)."""
    if not shows_unsupported(command.action, command.error_code):
        return
    client = session.get(Client, command.client_uuid, with_for_update=True)
    if client is None or command.action in (client.unsupported_actions or []):
        return
    client.unsupported_actions = ordered([*(client.unsupported_actions or []), command.action])
    # The device did nothing: the refused command must not lock the client out of the one
    # it can do (auto-recovery's reboot_host comes next).
    session.execute(delete(CommandLock).where(CommandLock.client_uuid == client.uuid,
                                              CommandLock.command_id == command.id))
    session.add(new_event(
        "capability_learned", "info", at, client.uuid, action=command.action,
        errorCode=command.error_code, commandId=command.id,
    ))

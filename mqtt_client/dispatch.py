"""Publishing to devices: commands (the broker's PUBACK recorded as `sent`) and each screen's
retained group_id (the PUBACK clears its outbox flag)."""

from __future__ import annotations

import json
import logging
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from core import commands, groups
from core.clock import Clock, utc_now
from core.contract import device_topic
from core.logs import ids
from core.models import ClientCommand
from mqtt_client.publisher import Publisher

log = logging.getLogger(__name__)


class CommandDispatcher:
    def __init__(self, publisher: Publisher, session_factory: sessionmaker[Session], prefix: str,
                 *, clock: Clock = utc_now):
        self.publisher = publisher
        self.session_factory = session_factory
        self.prefix = prefix
        self.clock = clock

    def dispatch(self, command: ClientCommand) -> bool:
        """Publish one command at QoS 1 with its message expiry. False when it was not handed
        to the broker (not connected, or expired already): it stays queued for a retry."""
        expiry = commands.seconds_left(command, self.clock())
        if expiry < 1:
            return False
        payload = json.dumps(commands.command_payload(command), separators=(",", ":")).encode()
        topic = device_topic(self.prefix, command.client_uuid, "commands")
        command_id = command.id

        def on_puback(ok: bool, at: datetime) -> None:
            if not ok:
                return  # still queued: the scheduler publishes it again
            with self.session_factory() as session, session.begin():
                commands.mark_sent(session, command_id, at)

        published = self.publisher.publish(topic, payload, expiry_seconds=expiry,
                                           on_puback=on_puback)
        if published:
            log.info("command %s %s published to %s", command_id, command.action, topic,
                     extra=ids(client_uuid=command.client_uuid, command_id=command_id))
        return published

    def publish_group(self, client_uuid: str, group_id: int | None) -> bool:
        """Publish the screen's group as its retained group_id (empty: no group). False when
        the broker is not connected: the outbox keeps it for the scheduler."""
        topic = device_topic(self.prefix, client_uuid, "group_id")

        def on_puback(ok: bool, at: datetime) -> None:
            if ok:
                with self.session_factory() as session, session.begin():
                    groups.mark_group_published(session, client_uuid, group_id)

        published = self.publisher.publish(topic, groups.group_payload(group_id), retain=True,
                                           on_puback=on_puback)
        if published:
            log.info("group %s published to %s", group_id, topic)
        return published

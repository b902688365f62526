"""The web worker's command publisher: one MQTT connection per worker process, made on
first use (after gunicorn forked), so that an accepted command goes out within milliseconds."""

from __future__ import annotations

import logging
import os
import secrets
import threading

from flask import Flask, current_app

from core import groups
from core.clock import utc_now
from core.db import make_engine, make_session_factory
from mqtt_client.dispatch import CommandDispatcher
from mqtt_client.publisher import Publisher
from server.extensions import current_settings, db

log = logging.getLogger(__name__)
FIRST_CONNECT_WAIT = 2.0  # seconds a worker's very first command waits for the broker
_lock = threading.Lock()


def command_dispatcher() -> CommandDispatcher:
    app = current_app
    with _lock:
        found = app.extensions.get("command_dispatcher")
        if found is not None and found[0] == os.getpid():
            return found[1]
        settings = current_settings()
        publisher = Publisher.start(
            settings, f"infoscreen-web-{os.getpid()}-{secrets.token_hex(3)}"
        )
        engine = make_engine(settings.database_url)
        dispatcher = CommandDispatcher(publisher, make_session_factory(engine),
                                       settings.mqtt_topic_prefix)
        app.extensions["command_dispatcher"] = (os.getpid(), dispatcher)
    if not publisher.wait_connected(FIRST_CONNECT_WAIT):
        log.warning("the broker is not reachable yet; commands stay queued until the "
                    "scheduler publishes them")
    return dispatcher


def stop_dispatcher(app: Flask) -> None:
    found = app.extensions.pop("command_dispatcher", None)
    if found is not None and found[0] == os.getpid():
        found[1].publisher.stop()
        found[1].session_factory.kw["bind"].dispose()


def publish_pending_assignments() -> None:
    """Publish the group assignments the request committed; what the broker does not take
    now, the scheduler publishes later."""
    dispatcher = command_dispatcher()
    if not dispatcher.publisher.connected:
        return  # claim nothing: the scheduler publishes them once the broker is back
    due = groups.assignments_to_publish(db.session, utc_now(),
                                        retry_after=current_settings().command_redispatch_seconds)
    db.session.commit()
    for client_uuid, group_id in due:
        dispatcher.publish_group(client_uuid, group_id)

"""Clearing a retained message at the broker, from a web request."""

from __future__ import annotations

import logging
import os
import secrets

from core.config import Settings
from core.contract import device_topic
from mqtt_client import service_client

log = logging.getLogger(__name__)


def clear_retained_service_failed(settings: Settings, client_uuid: str,
                                  timeout: float = 3.0) -> bool:
    """Publish an empty retained payload to the client's service_failed topic (QoS 1).

    Returns whether the broker confirmed it. An acknowledgement never depends on it: the
    listener keeps an acknowledged alert acknowledged when the same report is replayed.
    """
    topic = device_topic(settings.mqtt_topic_prefix, client_uuid, "service_failed")
    client = service_client(settings, f"infoscreen-web-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=10)
        client.loop_start()
        info = client.publish(topic, b"", qos=1, retain=True)
        info.wait_for_publish(timeout)
        if info.is_published():
            return True
        log.warning("the broker did not confirm clearing %s within %.0f s", topic, timeout)
    except Exception as exc:  # noqa: BLE001 - the broker being away must not fail the request
        log.warning("could not clear %s at the broker: %s", topic, exc)
    finally:
        client.disconnect()
        client.loop_stop()
    return False

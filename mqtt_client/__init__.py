"""The one place where the backend's processes build their paho MQTT 5 client.

`core` stays free of paho; the listener, the scheduler, the server and the simulator all get
their client from `make_client`, so authentication, reconnect back-off and (later) TLS are set
the same way everywhere.
"""

from __future__ import annotations

import logging
import socket

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.config import Settings

log = logging.getLogger(__name__)


def default_client_id(role: str) -> str:
    return f"infoscreen-{role}-{socket.gethostname()}"[:64]


def make_client(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    if username:
        client.username_pw_set(username, password or None)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def service_client(settings: Settings, client_id: str) -> mqtt.Client:
    return make_client(client_id, username=settings.mqtt_user, password=settings.mqtt_password)


def connect_properties(session_expiry_seconds: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_seconds
    return props


def connect_async(
    client: mqtt.Client, settings: Settings, *, session_expiry_seconds: int = 0
) -> None:
    """Start connecting in the background; paho's loop keeps retrying with back-off.

    A session expiry above 0 keeps the broker queueing QoS 1 messages for us while we are away.
    """
    client.connect_async(
        settings.mqtt_host,
        settings.mqtt_port,
        keepalive=settings.mqtt_keepalive,
        clean_start=session_expiry_seconds == 0,
        properties=connect_properties(session_expiry_seconds),
    )

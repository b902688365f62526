"""The one place where the backend's processes build their paho MQTT 5 client.

`core` stays free of paho; the listener, the scheduler, the server and the simulator all get
their client from `make_client`, so authentication, reconnect back-off and TLS are set the same
way everywhere. With MQTT_TLS_ENABLED, `service_client` (and the simulator's devices) speak
TLS 1.2 or newer, verifying the broker against MQTT_TLS_CA_CERT (or the system's trust store).
"""

from __future__ import annotations

import logging
import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.config import Settings

log = logging.getLogger(__name__)


def default_client_id(role: str) -> str:
    return f"infoscreen-{role}-{socket.gethostname()}"[:64]


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS settings as an SSLContext, or None when MQTT_TLS_ENABLED is off.

    One context serves any number of clients (the simulator shares one among its devices).
    """
    if not settings.mqtt_tls_enabled:
        return None
    return client_tls_context(
        cafile=settings.mqtt_tls_ca_cert or None,
        certfile=settings.mqtt_tls_certfile or None,
        keyfile=settings.mqtt_tls_keyfile or None,
        insecure=settings.mqtt_tls_insecure,
        host=settings.mqtt_host,
    )


def client_tls_context(
    *,
    cafile: str | None,
    certfile: str | None = None,
    keyfile: str | None = None,
    insecure: bool = False,
    host: str = "the broker",
) -> ssl.SSLContext:
    """TLS 1.2 or newer; the broker verified against `cafile` (None: the system's trust
    store); a client certificate when `certfile` is given."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    if insecure:
        # As paho's tls_insecure_set: the chain is still verified, the host name is not.
        context.check_hostname = False
        log.warning(
            "MQTT_TLS_INSECURE=true: NOT checking that the broker's certificate names %s; "
            "anyone on the network path could pose as the broker. Development only.",
            host,
        )
    return context


def make_client(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
    tls: ssl.SSLContext | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """`manual_ack`: paho does not acknowledge a received QoS 1 message itself; the caller does,
    with `client.ack(mid, qos)`, once the message is safe (the listener: once committed)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if username:
        client.username_pw_set(username, password or None)
    if tls is not None:
        client.tls_set_context(tls)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def service_client(settings: Settings, client_id: str, *, manual_ack: bool = False
                   ) -> mqtt.Client:
    return make_client(client_id, username=settings.mqtt_user, password=settings.mqtt_password,
                       tls=tls_context(settings), manual_ack=manual_ack)


def connect_properties(session_expiry_seconds: int, receive_maximum: int | None = None
                       ) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_seconds
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


def connect_async(
    client: mqtt.Client,
    settings: Settings,
    *,
    session_expiry_seconds: int = 0,
    receive_maximum: int | None = None,
) -> None:
    """Start connecting in the background; paho's loop keeps retrying with back-off.

    A session expiry above 0 keeps the broker queueing QoS 1 messages for us while we are away.
    `receive_maximum` (MQTT 5, 1 to 65,535) is how many QoS 1 messages the broker may send us
    before we acknowledge one; None leaves it to the broker (Mosquitto: max_inflight_messages).
    """
    client.connect_async(
        settings.mqtt_host,
        settings.mqtt_port,
        keepalive=settings.mqtt_keepalive,
        clean_start=session_expiry_seconds == 0,
        properties=connect_properties(session_expiry_seconds, receive_maximum),
    )

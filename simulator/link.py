"""One device's MQTT connection on the fleet's selector (`Link`): connecting without
blocking, the keep-alive, and reconnecting with back-off as paho's own loop would, so that a
thousand devices share one thread."""

from __future__ import annotations

import errno
import logging
import os
import random
import selectors
import socket
from typing import Any, cast

import paho.mqtt.client as mqtt

from core.config import Settings
from mqtt_client import connect_async
from simulator.device import MqttClient, Timers

log = logging.getLogger(__name__)

Address = tuple[int, int, int, Any]  # family, type, proto, sockaddr (from getaddrinfo)
RETRY_SECONDS = (1.0, 30.0)  # reconnect back-off, as paho's own loop does it


def broker_addresses(settings: Settings) -> list[Address]:
    """Where the broker listens, resolved once for the whole fleet."""
    found = socket.getaddrinfo(settings.mqtt_host, settings.mqtt_port, type=socket.SOCK_STREAM)
    return [(family, kind, proto, address) for family, kind, proto, _, address in found]


def connected_socket(address: Address, timeout: float) -> socket.socket:
    """A TCP socket connected the blocking way, for TLS: paho wraps it and runs the TLS
    handshake on it at once, which needs the connection up. Each device then holds the
    fleet's thread for a connect and a handshake (milliseconds on a LAN; fine for dev sizes,
    split big TLS fleets with --processes)."""
    family, kind, proto, sockaddr = address
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def connecting_socket(address: Address) -> socket.socket:
    """A TCP socket whose connect is under way: the fleet's one thread never waits for a
    handshake (a broker whose accept queue is full would hold it for a second or more).
    paho writes its CONNECT once the socket is writable; a refused connect shows up as a
    read error, and the socket is closed like a lost connection."""
    family, kind, proto, sockaddr = address
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    error = sock.connect_ex(sockaddr)
    if error not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(error, os.strerror(error))
    return sock


class Link:
    """One device's connection, on the fleet's selector instead of a paho thread.

    `connect` connects and keeps reconnecting with back-off after a lost connection, as paho's
    own loop does; `disconnect` is on purpose, and the link stays down until `connect`.
    """

    def __init__(
        self, client: MqttClient, selector: selectors.BaseSelector, scheduler: Timers
    ):
        self.client = cast(mqtt.Client, client)
        self.selector = selector
        self.scheduler = scheduler
        self.settings: Settings | None = None  # given by Fleet.start, with the addresses
        self.addresses: list[Address] = []
        self._address = 0  # the one to try; the next one after a failed attempt
        self.wanted = False
        self.sock: Any = None
        self._retry_delay = RETRY_SECONDS[0]
        self._retry_pending = False
        self._connecting = False
        client.on_socket_open = self._opened  # type: ignore[attr-defined]
        client.on_socket_close = self._closed  # type: ignore[attr-defined]
        client.on_socket_register_write = self._want_write  # type: ignore[attr-defined]
        client.on_socket_unregister_write = self._written  # type: ignore[attr-defined]
        # paho 2 (reconnect -> _create_socket -> _create_socket_connection) would connect with
        # a blocking socket.create_connection; test_simulator_network checks this hook holds.
        client._create_socket_connection = self._connecting_socket  # type: ignore[attr-defined]

    def connect(self) -> None:
        if self.settings is None:
            raise RuntimeError("the fleet is not started")
        self.wanted = True
        connect_async(self.client, self.settings)  # host, port, keepalive, clean start
        self._attempt()

    def _connecting_socket(self) -> socket.socket:
        if not self.addresses:
            raise OSError(f"{self.client.host}: no address to connect to")
        address = self.addresses[self._address % len(self.addresses)]
        if self.settings is not None and self.settings.mqtt_tls_enabled:
            return connected_socket(address, self.client.connect_timeout)
        return connecting_socket(address)

    def disconnect(self, reasoncode: Any = None) -> None:
        self.wanted = False
        self.client.disconnect(reasoncode=reasoncode)

    def _attempt(self) -> None:
        self._retry_pending = False
        if not self.wanted or self.sock is not None:  # connected or connecting already
            return
        self._connecting = True
        try:
            self.client.reconnect()  # starts the TCP connect; CONNECT goes out when writable
        except (OSError, ValueError) as exc:
            log.debug("simulated device %s: cannot connect: %s", self.client._client_id, exc)
            self._address += 1
            self._retry_later()
        finally:
            self._connecting = False

    def _retry_later(self) -> None:
        if self._retry_pending:
            return
        self._retry_pending = True
        delay = self._retry_delay * random.uniform(0.5, 1.0)  # a fleet does not retry in step
        self._retry_delay = min(self._retry_delay * 2, RETRY_SECONDS[1])
        self.scheduler.call_later(delay, self._attempt)

    def handle(self, events: int) -> None:
        """The socket is ready: read what came, write what waits."""
        try:
            if events & selectors.EVENT_READ:
                self.client.loop_read()
                # TLS: whole packets may wait decrypted in the SSL object while the socket
                # itself has nothing more to read, so the selector would not wake us for them.
                while self.sock is not None and _pending(self.sock):
                    self.client.loop_read()
            if events & selectors.EVENT_WRITE and self.sock is not None:
                self.client.loop_write()
        except Exception:
            log.exception("simulated device %s: network error", self.client._client_id)

    def tick(self) -> None:
        """Keep-alive: PINGREQ when due, and a dead connection noticed."""
        if self.sock is not None:
            self.client.loop_misc()
        if self.client.is_connected():
            self._retry_delay = RETRY_SECONDS[0]

    def close(self) -> None:
        """Forget the socket at the end of a run (paho closes it once its DISCONNECT is out)."""
        self.wanted = False
        if self.sock is not None:
            self._unregister(self.sock)

    # paho's socket callbacks (external event loop) -----------------------------------------

    def _opened(self, client: Any, userdata: Any, sock: Any) -> None:
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self)

    def _closed(self, client: Any, userdata: Any, sock: Any) -> None:
        self._unregister(sock)
        self.sock = None
        if self.wanted and not self._connecting:  # lost: come back, as paho's loop would
            if not self.client.is_connected():  # refused or never answered: the next address
                self._address += 1
            self._retry_later()

    def _want_write(self, client: Any, userdata: Any, sock: Any) -> None:
        self._modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _written(self, client: Any, userdata: Any, sock: Any) -> None:
        self._modify(sock, selectors.EVENT_READ)

    def _modify(self, sock: Any, events: int) -> None:
        try:
            self.selector.modify(sock, events, self)
        except (KeyError, ValueError):  # closed meanwhile
            pass

    def _unregister(self, sock: Any) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass


def _pending(sock: Any) -> int:
    pending = getattr(sock, "pending", None)
    return pending() if pending is not None else 0

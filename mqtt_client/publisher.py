"""A long-lived publishing connection for the server and the scheduler.

`publish(...)` never blocks on the broker: it hands the message to paho and returns. When the
broker acknowledges a QoS 1 message (PUBACK), the caller's `on_puback(ok, at)` runs on the
publisher's own worker thread, never on paho's network thread, so it may write to the
database. A message the broker refuses (reason code >= 0x80) reports ok=False.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.clock import Clock, utc_now
from core.config import Settings
from mqtt_client import connect_async, service_client

log = logging.getLogger(__name__)

# (acknowledged?, when the PUBACK arrived: read on paho's thread, not when the callback runs)
OnPuback = Callable[[bool, datetime], None]
_STOP = object()


class Publisher:
    def __init__(self, client: mqtt.Client, *, clock: Clock = utc_now):
        self.client = client
        self.clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[int, OnPuback] = {}  # mid -> callback
        # PUBACKs that beat the bookkeeping of their mid: (ok, when)
        self._early: dict[int, tuple[bool, datetime]] = {}
        self._connected = threading.Event()
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run_callbacks, daemon=True,
                                        name="publisher-callbacks")
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    @classmethod
    def start(cls, settings: Settings, client_id: str) -> Publisher:
        publisher = cls(service_client(settings, client_id))
        publisher._worker.start()
        connect_async(publisher.client, settings)
        publisher.client.loop_start()
        return publisher

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        expiry_seconds: int | None = None,
        on_puback: OnPuback | None = None,
    ) -> bool:
        """QoS 1 publish. False when not connected: nothing was handed to paho (paho would
        otherwise queue it for the next connection, and the caller retries on its own)."""
        if not self._connected.is_set():
            return False
        properties = None
        if expiry_seconds is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = expiry_seconds
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
            return False
        callback = on_puback or _ignore
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._waiting[info.mid] = callback
        if early is not None:
            self._work.put((callback, *early))
        return True

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._work.put(_STOP)
        self._worker.join(timeout=5)

    # paho callbacks: thin and guarded; the real work runs on the worker thread ------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            log.error("broker refused the publisher's connection: %s", reason_code)
            return
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._connected.clear()
        # Unacknowledged messages are not retried across connections by us: the callers
        # publish again what they still see as undelivered.
        with self._lock:
            lost, self._waiting = self._waiting, {}
        now = self.clock()
        for callback in lost.values():
            self._work.put((callback, False, now))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        ok = not getattr(reason_code, "is_failure", False)
        at = self.clock()
        if not ok:
            log.error("broker refused message %d: %s", mid, reason_code)
        with self._lock:
            callback = self._waiting.pop(mid, None)
            if callback is None:
                self._early[mid] = (ok, at)
                return
        self._work.put((callback, ok, at))

    def _run_callbacks(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            callback, ok, at = item
            try:
                callback(ok, at)
            except Exception:
                log.exception("PUBACK callback failed")


def _ignore(ok: bool, at: datetime) -> None:
    pass

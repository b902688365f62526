"""The listener process: paho callbacks feed the batcher; the main loop steps it."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.clock import Clock, utc_now
from core.config import Settings
from core.contract import Rejection, parse_message, subscription_topics
from core.db import describe_url, make_engine, make_session_factory
from listener.batcher import Batcher
from listener.metrics import ListenerMetrics
from mqtt_client import connect_async, default_client_id, service_client

log = logging.getLogger(__name__)

SESSION_EXPIRY_SECONDS = 3600  # the broker keeps queueing for us across restarts this long
SHUTDOWN_DRAIN_SECONDS = 30


class Listener:
    def __init__(
        self,
        settings: Settings,
        batcher: Batcher,
        *,
        clock: Clock = utc_now,
        client_id: str | None = None,
    ):
        self.settings = settings
        self.batcher = batcher
        self.clock = clock
        self.topics = subscription_topics(settings.mqtt_topic_prefix)
        self.warned: set[str] = set()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        client_id = client_id or settings.listener_client_id or default_client_id("listener")
        self.client = service_client(settings, client_id)
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message

    def subscription_filters(self) -> list[str]:
        group = self.settings.listener_shared_group
        return [f"$share/{group}/{t}" if group else t for t in self.topics]

    # paho callbacks run on paho's network thread: thin, guarded, never raising.

    def on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                   _properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s; retrying", reason_code)
            return
        self.connected.set()
        # Subscribing here means a reconnect subscribes again.
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.subscription_filters()])
        log.info(
            "connected to %s:%d, subscribing to %d topics%s",
            self.settings.mqtt_host, self.settings.mqtt_port, len(self.topics),
            f" in shared group {self.settings.listener_shared_group!r}"
            if self.settings.listener_shared_group else "",
        )

    def on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reason_codes: Any,
                     _properties: Any) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("broker refused %d subscriptions: %s", len(refused), ", ".join(refused))
        else:
            self.subscribed.set()

    def on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                      _properties: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self.stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.batcher.metrics.received.inc()
            item = parse_message(
                msg.topic,
                msg.payload,
                self.clock(),
                prefix=self.settings.mqtt_topic_prefix,
                max_payload_bytes=self.settings.listener_max_payload_bytes,
                retained=bool(msg.retain),
            )
            if isinstance(item, Rejection):
                self._log_rejection(item)
            self.batcher.put(item)
        except Exception:  # an escaping exception would silently kill paho's thread
            log.exception("could not handle a message on %r", getattr(msg, "_topic", b""))

    def _log_rejection(self, rejection: Rejection) -> None:
        # Once per reason at WARNING, so a misbehaving device cannot flood the log.
        level = logging.DEBUG if rejection.reason in self.warned else logging.WARNING
        self.warned.add(rejection.reason)
        log.log(
            level,
            "rejected a message on %s: %s (%s); payload: %s",
            rejection.topic, rejection.reason, rejection.detail, rejection.excerpt,
        )

    # The main loop.

    def session_expiry(self) -> int:
        """A lone listener keeps its session, so the broker queues for it while it restarts.

        In a shared group the session ends with the connection: the broker hands a group's
        messages round-robin to its sessions, offline ones included, so a stopped member would
        swallow its share until the session expired. The other members take over instead.
        """
        return 0 if self.settings.listener_shared_group else SESSION_EXPIRY_SECONDS

    def start(self) -> None:
        connect_async(self.client, self.settings, session_expiry_seconds=self.session_expiry())
        self.client.loop_start()

    def step(self) -> bool:
        return self.batcher.step(wait=self.batcher.flush_seconds / 4)

    def run(self) -> None:
        self.start()
        try:
            while not self.stopping.is_set():
                while self.step() and not self.stopping.is_set():
                    pass
        finally:
            self.shutdown()

    def stop(self, *_args: Any) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        """Stop taking messages, then write everything taken. Messages the broker still holds
        for our session are delivered to the next start."""
        self.stopping.set()
        self.client.disconnect()
        self.client.loop_stop()
        backlog = self.batcher.backlog()
        if self.batcher.drain(SHUTDOWN_DRAIN_SECONDS):
            log.info("listener stopped; %d pending messages written", backlog)
        else:
            log.error(
                "listener stopped with %d messages not written: the database stayed unavailable",
                self.batcher.backlog(),
            )


def build_listener(
    settings: Settings, *, clock: Clock = utc_now, client_id: str | None = None
) -> Listener:
    engine = make_engine(settings.database_url, writer=True)
    metrics = ListenerMetrics()
    batcher = Batcher(
        make_session_factory(engine),
        batch_size=settings.listener_batch_size,
        flush_seconds=settings.listener_flush_ms / 1000,
        log_cap=settings.listener_log_cap_per_client,
        clock=clock,
        metrics=metrics,
    )
    log.info("listener storing to %s", describe_url(settings.database_url))
    if settings.listener_metrics_port:
        metrics.serve(settings.listener_metrics_port)
        log.info("metrics on http://127.0.0.1:%d/metrics", settings.listener_metrics_port)
    return Listener(settings, batcher, clock=clock, client_id=client_id)


def run(settings: Settings) -> None:
    listener = build_listener(settings)
    signal.signal(signal.SIGTERM, listener.stop)
    signal.signal(signal.SIGINT, listener.stop)
    listener.run()

"""The listener process: paho receives and acknowledges; a sink parses and writes.

In production the sink is the writer process (listener.writer); tests use the in-process
sink (listener.intake). Both run the same parser and batcher, and both report how many
messages they committed: a QoS 1 message is acknowledged to the broker only then
(listener.acks), so one that dies with the writer comes again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.clock import Clock, utc_now
from core.config import Settings
from core.contract import subscription_topics
from core.db import make_engine, make_session_factory
from core.screenshots import screenshot_topics
from listener.acks import Acknowledger
from listener.intake import InlineSink, Intake, build_batcher
from listener.screenshots import RECEIVE_MAXIMUM as SCREENSHOT_WINDOW
from listener.screenshots import ScreenshotSink
from listener.writer import ProcessSink
from mqtt_client import connect_async, default_client_id, service_client

log = logging.getLogger(__name__)

SESSION_EXPIRY_SECONDS = 3600  # the broker keeps queueing for us across restarts this long
SHUTDOWN_DRAIN_SECONDS = 30
RECEIVE_MAXIMUM_CEILING = 65_535  # the largest Receive Maximum MQTT 5 can express
SCREENSHOT_NICENESS = 10


class Sink(Protocol):
    def accept(self, topic: str, payload: bytes, retained: bool, received_at: Any) -> None: ...
    def step(self, wait: float) -> bool: ...
    def failed(self) -> str | None: ...
    def drain(self, timeout: float) -> bool: ...
    def backlog(self) -> int: ...
    def committed(self) -> int: ...  # how many accepted messages are committed, in order


class Listener:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        *,
        clock: Clock = utc_now,
        client_id: str | None = None,
        topics: list[str] | None = None,
        receive_maximum: int | None = None,
        companion: Any = None,
    ):
        self.settings = settings
        self.sink = sink
        self.clock = clock
        self.exit_code = 0
        self.topics = topics or subscription_topics(settings.mqtt_topic_prefix)
        self.window = receive_maximum
        # A process that runs beside this one (the screenshot path): if it dies, we stop too,
        # so that a supervisor restarts both.
        self.companion = companion
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.taking = threading.Event()  # cleared at shutdown: what arrives then is not taken
        self.taking.set()
        client_id = client_id or settings.listener_client_id or default_client_id("listener")
        self.client = service_client(settings, client_id, manual_ack=True)
        self.acks = Acknowledger(self.client.ack)
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
        self.acks.connection_lost()
        self.subscribed.clear()
        if not self.stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not self.taking.is_set():
            return  # shutting down: unacknowledged, it goes to the next start
        try:
            self.sink.accept(msg.topic, msg.payload, bool(msg.retain), self.clock())
        except Exception:  # an escaping exception would silently kill paho's thread
            log.exception("could not handle a message on %r", getattr(msg, "_topic", b""))
            self.acks.skipped(msg.mid, msg.qos)
        else:
            self.acks.took(msg.mid, msg.qos)

    # The main loop.

    def session_expiry(self) -> int:
        """A lone listener keeps its session, so the broker queues for it while it restarts.

        In a shared group the session ends with the connection: the broker hands a group's
        messages round-robin to its sessions, offline ones included, so a stopped member would
        swallow its share until the session expired. The other members take over instead.
        The price: what a member took and had not committed when its writer died is gone
        with its session, acknowledged or not (Mosquitto passes it to no other member).
        """
        return 0 if self.settings.listener_shared_group else SESSION_EXPIRY_SECONDS

    def receive_maximum(self) -> int:
        """How many QoS 1 messages the broker may send us unacknowledged (MQTT 5).

        Nothing is acknowledged before its batch commits, so this window must hold a full
        batch (LISTENER_BATCH_SIZE, 1,000 by default) and should hold two: one committing
        while the next fills, or the broker would wait for every commit before sending more.
        Two batches, then: 2,000 by default. Mosquitto takes a client's Receive Maximum in
        place of its max_inflight_messages (1,000 in mosquitto/config.py, what clients that
        announce none get), so the listener gets its 2,000 and devices keep 1,000. The largest
        batch (50,000) gets the protocol's ceiling, 65,535: the full batch and a part of the
        next. A batch the window cannot fill (a broker that caps the window lower) is still
        written when it is LISTENER_FLUSH_MS old, so no setting can hang the listener.
        Beyond the window the broker queues for us (max_queued_messages), as it does while
        the listener restarts.
        """
        if self.window is not None:
            return self.window
        return min(RECEIVE_MAXIMUM_CEILING, 2 * self.settings.listener_batch_size)

    def start(self) -> None:
        connect_async(self.client, self.settings, session_expiry_seconds=self.session_expiry(),
                      receive_maximum=self.receive_maximum())
        self.client.loop_start()

    def step(self) -> bool:
        more = self.sink.step(self.settings.listener_flush_ms / 4000)
        self.acks.release(self.sink.committed())
        return more

    def run(self) -> None:
        self.start()
        try:
            while not self.stopping.is_set():
                while self.step() and not self.stopping.is_set():
                    pass
                problem = self.sink.failed() or self._companion_failed()
                if problem:
                    log.error("%s; stopping so that a supervisor restarts the listener", problem)
                    self.exit_code = 1
                    break
        finally:
            self.shutdown()

    def stop(self, *_args: Any) -> None:
        self.stopping.set()

    def _companion_failed(self) -> str | None:
        if self.companion is None or self.companion.is_alive():
            return None
        return f"the {self.companion.name} process exited with code {self.companion.exitcode}"

    def shutdown(self) -> None:
        """Stop taking messages, then write everything taken. Messages the broker still holds
        for our session are delivered to the next start."""
        self.stopping.set()
        if self.session_expiry():
            # The broker keeps our session and sends again what we did not acknowledge: stop
            # taking, write what was taken and acknowledge it, then leave. Leaving first would
            # have the broker send it all again to the next start.
            self.taking.clear()
            self.drain()
            self.disconnect()
        else:
            # In a shared group the session ends with the connection, and Mosquitto does not
            # hand what it sent us unacknowledged to the other members (tried with 2.0): what
            # we took exists only here. Leave first, so that no more comes, then write it.
            self.disconnect()
            self.drain()

    def drain(self) -> None:
        backlog = self.sink.backlog()
        drained = self.sink.drain(SHUTDOWN_DRAIN_SECONDS)
        self.acks.release(self.sink.committed())
        if drained:
            log.info("listener stopped; %d pending messages written", backlog)
        else:
            self.exit_code = 1
            log.error("listener stopped with messages not written: the database stayed "
                      "unavailable or the writer failed")

    def disconnect(self) -> None:
        # paho writes the PUBACKs queued so far before the DISCONNECT, and loop_stop waits.
        self.client.disconnect()
        self.client.loop_stop()


def build_listener(
    settings: Settings, *, clock: Clock = utc_now, client_id: str | None = None
) -> Listener:
    """A listener that parses and writes in this process (tests, embedding)."""
    sink = InlineSink(Intake(settings, build_batcher(settings, clock=clock)))
    return Listener(settings, sink, clock=clock, client_id=client_id)


def screenshot_client_id(base: str) -> str:
    return f"{base}-screenshots"


def build_screenshot_listener(settings: Settings, *, client_id: str, clock: Clock = utc_now):
    """The screenshot listener, writing in the calling process."""
    engine = make_engine(settings.database_url, writer=True)
    sink = ScreenshotSink(settings, make_session_factory(engine), clock=clock)
    return Listener(settings, sink, clock=clock, client_id=screenshot_client_id(client_id),
                    topics=screenshot_topics(settings.mqtt_topic_prefix),
                    receive_maximum=SCREENSHOT_WINDOW)


def screenshot_main(settings: Settings, client_id: str, log_level: str) -> None:
    """The screenshot process: a listener of its own until SIGTERM (the parent's stop)."""
    from core.logs import configure_logging

    configure_logging(log_level, settings.log_format)
    # Telemetry first: on a busy machine pictures wait, heartbeats do not.
    os.nice(SCREENSHOT_NICENESS)
    listener = build_screenshot_listener(settings, client_id=client_id)
    signal.signal(signal.SIGTERM, listener.stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    listener.run()
    raise SystemExit(listener.exit_code)


def start_screenshot_process(settings: Settings, client_id: str, log_level: str):
    process = multiprocessing.get_context("spawn").Process(
        target=screenshot_main, args=(settings, client_id, log_level),
        name="listener-screenshots")
    process.start()
    return process


def stop_screenshot_process(process: Any, timeout: float = 40.0) -> None:
    if process.is_alive():
        process.terminate()  # SIGTERM: it stops taking, stores what it took, and leaves
        process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join(5)


def run(settings: Settings) -> int:
    client_id = settings.listener_client_id or default_client_id("listener")
    screenshots = start_screenshot_process(settings, client_id, settings.log_level)
    listener = Listener(settings, ProcessSink(settings, settings.log_level),
                        client_id=client_id, companion=screenshots)
    signal.signal(signal.SIGTERM, listener.stop)
    signal.signal(signal.SIGINT, listener.stop)
    try:
        listener.run()
    finally:
        stop_screenshot_process(screenshots)
    return listener.exit_code

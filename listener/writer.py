"""The listener's writer process: parsing and database writes away from paho's thread.

paho's network thread handles one packet per select() and needs the interpreter whenever
data arrives; in the same process as the writer it waits behind the writer's work for the
GIL, which halves ingest (measured in bench/ingest.py). So the listener process only
receives and acknowledges, and ships raw messages in chunks over a pipe to this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import struct
import threading
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection

from core.config import Settings

log = logging.getLogger(__name__)

SHIP_SECONDS = 0.005  # how often the listener process hands what arrived to the writer
# One record per message: receive time, retain flag, topic length, payload length, then both.
RECORD = struct.Struct("!d?HI")


def pack(buffer: bytearray, topic: str, payload: bytes, retained: bool,
         received_at: datetime) -> None:
    raw_topic = topic.encode()
    buffer += RECORD.pack(received_at.timestamp(), retained, len(raw_topic), len(payload))
    buffer += raw_topic
    buffer += payload


def unpack(data: bytes):
    """Yield (topic, payload, retained, received_at) from a shipped buffer."""
    offset, size = 0, RECORD.size
    while offset < len(data):
        stamp, retained, topic_len, payload_len = RECORD.unpack_from(data, offset)
        offset += size
        topic = data[offset : offset + topic_len].decode(errors="replace")
        offset += topic_len
        payload = data[offset : offset + payload_len]
        offset += payload_len
        yield topic, payload, retained, datetime.fromtimestamp(stamp, UTC)


class ProcessSink:
    """Parent side: paho's thread appends packed messages; the main loop ships the buffer.

    Packing is a few C-level appends and shipping is one pipe write per interval: the work
    left in this process, beside paho, is as small as it can be.
    """

    def __init__(self, settings: Settings, log_level: str = "INFO"):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.lock = threading.Lock()
        self.buffer = bytearray()
        self.count = 0
        self.process = context.Process(
            target=writer_main, args=(settings, child, log_level), name="listener-writer"
        )
        self.process.start()
        child.close()

    def accept(self, topic: str, payload: bytes, retained: bool, received_at: datetime) -> None:
        with self.lock:
            pack(self.buffer, topic, payload, retained, received_at)
            self.count += 1

    def step(self, wait: float) -> bool:
        """Ship what has arrived since the last call, after sleeping up to `wait`."""
        time.sleep(min(wait, SHIP_SECONDS))
        with self.lock:
            data, self.buffer, self.count = self.buffer, bytearray(), 0
        if data:
            self.conn.send_bytes(data)
        return False

    def failed(self) -> str | None:
        if self.process.is_alive():
            return None
        return f"the writer process exited with code {self.process.exitcode}"

    def drain(self, timeout: float) -> bool:
        """Ship the rest, tell the writer to finish, and wait for it to write everything."""
        try:
            self.step(0)
            self.conn.send_bytes(b"")  # end of stream
        except (BrokenPipeError, OSError):
            return False
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
            return False
        return self.process.exitcode == 0

    def backlog(self) -> int:
        return self.count


def writer_main(settings: Settings, conn: Connection, log_level: str) -> None:
    """Child side: parse, batch and write until the parent says stop (or goes away)."""
    from infoscreen.cli import configure_logging
    from listener.intake import Intake, build_batcher

    # The parent coordinates shutdown: a Ctrl-C must not stop us before we drained.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)
    batcher = build_batcher(settings)
    if settings.listener_metrics_port:
        batcher.metrics.serve(settings.listener_metrics_port)
        log.info("metrics on http://127.0.0.1:%d/metrics", settings.listener_metrics_port)
    intake = Intake(settings, batcher)
    while True:
        wait = batcher.flush_seconds / 4
        if batcher.pending_since is not None:
            wait = min(wait, max(0.0, batcher.pending_since + batcher.flush_seconds
                                 - batcher.monotonic()))
        try:
            data = conn.recv_bytes() if conn.poll(wait) else None
        except (EOFError, OSError):
            log.error("the listener process went away; writing what was received")
            break
        if data == b"":
            break
        for raw in unpack(data or b""):
            intake.handle(*raw)
        while batcher.step():
            pass
    backlog = batcher.backlog()
    if batcher.drain(30):
        log.info("writer stopped; %d pending messages written", backlog)
        raise SystemExit(0)
    log.error("writer stopped with %d messages not written: the database stayed unavailable",
              batcher.backlog())
    raise SystemExit(1)

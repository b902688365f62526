"""The listener's writer process: parsing and database writes away from paho's thread.

paho's network thread handles one packet per select() and needs the interpreter whenever
data arrives; in the same process as the writer it waits behind the writer's work for the
GIL, which halves ingest (measured in bench/ingest.py). So the listener process only
receives and acknowledges, and ships raw messages in chunks over a pipe to this process.

The pipe runs both ways: after every commit this process sends back how many of the shipped
messages it has committed ("committed through N"), and the listener process acknowledges
those to the broker (listener.acks). What this process had not committed when it died is
not acknowledged, so the broker sends it again to the restarted listener.
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
# Writer to listener: the number of shipped messages committed so far, in shipping order.
COMMITTED = struct.Struct("!Q")


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
        self.committed_through = 0
        self.broken = False
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
        if data and not self.broken:
            try:
                self.conn.send_bytes(data)
            except OSError:
                # The writer died. What was in `data` is neither committed nor acknowledged:
                # the broker sends it again to the next start.
                self.broken = True
        return False

    def failed(self) -> str | None:
        if self.process.is_alive() and not self.broken:
            return None
        self.process.join(5)  # the pipe breaks a moment before the process is gone
        return f"the writer process exited with code {self.process.exitcode}"

    def drain(self, timeout: float) -> bool:
        """Ship the rest, tell the writer to finish, and wait for it to write everything."""
        self.step(0)
        try:
            self.conn.send_bytes(b"")  # end of stream
        except OSError:
            return False
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
            return False
        return self.process.exitcode == 0

    def backlog(self) -> int:
        return self.count

    def committed(self) -> int:
        """How many of the messages accepted so far the writer has committed (its last word)."""
        try:
            while self.conn.poll():
                (self.committed_through,) = COMMITTED.unpack(self.conn.recv_bytes())
        except (EOFError, OSError):
            pass  # the writer is gone: failed() says so, and it committed no more
        return self.committed_through


def report_committed(conn: Connection, committed: int, reported: int) -> int:
    """Tell the listener process how many messages are committed, when that changed.

    A few bytes per batch: the listener process reads them every SHIP_SECONDS, so this never
    fills the pipe and blocks."""
    if committed != reported:
        try:
            conn.send_bytes(COMMITTED.pack(committed))
        except OSError:
            pass  # the listener process is gone; the next read says so
    return committed


def writer_main(settings: Settings, conn: Connection, log_level: str) -> None:
    """Child side: parse, batch and write until the parent says stop (or goes away)."""
    from core.logs import configure_logging
    from core.metrics import serve_metrics
    from listener.intake import Intake, build_batcher

    # The parent coordinates shutdown: a Ctrl-C must not stop us before we drained.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level, settings.log_format)
    batcher = build_batcher(settings)
    serve_metrics(batcher.metrics.registry, settings.listener_metrics_address, "listener")
    intake = Intake(settings, batcher)
    reported = 0
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
        reported = report_committed(conn, batcher.committed, reported)
    backlog = batcher.backlog()
    drained = batcher.drain(30)
    report_committed(conn, batcher.committed, reported)
    if drained:
        log.info("writer stopped; %d pending messages written", backlog)
        raise SystemExit(0)
    log.error("writer stopped with %d messages not written: the database stayed unavailable",
              batcher.backlog())
    raise SystemExit(1)

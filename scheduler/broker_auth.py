"""Failed broker logins, counted from Mosquitto's log file and reported as fleet events.

Mosquitto 2.0 keeps no count of refused logins in `$SYS`, so the log (`connection_messages
true`, log types error ... information, as our generated config sets them) is the source.
What 2.0.11 writes, checked against a real broker:

    New connection from 127.0.0.1:35705 on port 8883.
    Client <unknown> disconnected, not authorised.                 wrong password, unknown user,
                                                                   no credentials: all the same
    Client connection from 127.0.0.1 failed: error:0A000086:SSL routines::certificate verify
    failed.                                                        a TLS handshake that failed
    OpenSSL Error[0]: ...                                          other TLS errors

A refused login names neither the client id nor the username, only the preceding `New
connection` line names the address; it is attributed when that is unambiguous (every
connection still waiting for its login comes from one address) and left out otherwise.

Everything in the log that a client chose (its id, a TLS error text) is attacker-controlled:
it is kept as data, truncated, with control characters escaped, and never interpreted.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from core.events import new_event
from core.models import Event

log = logging.getLogger(__name__)

READ_BYTES = 1 << 20  # per step; a flooded log is read over several steps
MAX_LINE = 4096  # longer lines are cut (and cannot be a login failure we know)
TEXT_LIMIT = 64  # characters kept of any client-chosen text
EXAMPLES = 5
ADDRESSES = 10  # addresses named in one event; the rest are summed up as "other"
PENDING = 1024  # connections remembered while they wait for their login
PENDING_LINES = 1000  # ... for at most this many log lines

# The log's own timestamp prefix ("2026-11-24T09:09:48: ", or "1700000000: ") is optional.
_PREFIX = r"^(?:[^ ]{1,40}: )?"
NEW_CONNECTION = re.compile(_PREFIX + r"New connection from (\S+) on port \d+\.$")
LOGGED_IN = re.compile(_PREFIX + r"New client connected from (\S+) as ")
NOT_AUTHORISED = re.compile(_PREFIX + r"Client (.*) disconnected, not authorised\.$")
UNKNOWN_GONE = re.compile(_PREFIX + r"(?:Client <unknown> (?:disconnected|closed)"
                          r"|Socket error on client <unknown>)")
TLS_FAILED = re.compile(_PREFIX + r"Client connection from (\S+) failed: (.*?)\.?$")
OPENSSL = re.compile(_PREFIX + r"OpenSSL Error\[\d+\]: (.*)$")


def safe_text(value: str, limit: int = TEXT_LIMIT) -> str:
    """Client-chosen text as plain data: control characters escaped, at most `limit` chars."""
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in value[:limit])
    return escaped if len(escaped) <= limit and len(value) <= limit else escaped[:limit - 1] + "…"


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]  # "127.0.0.1:35705", "::1:35705"


@dataclass
class Failure:
    kind: str  # not_authorised, tls_handshake, tls_error
    address: str | None = None
    client_id: str | None = None
    detail: str | None = None

    def as_json(self) -> dict[str, str]:
        shown = {"kind": self.kind, "address": self.address, "clientId": self.client_id,
                 "detail": self.detail}
        return {k: safe_text(v) for k, v in shown.items() if v}


@dataclass
class LoginLog:
    """Reads Mosquitto's log lines and recognises the failed logins among them."""

    pending: OrderedDict[str, tuple[str, int]] = field(default_factory=OrderedDict)
    lines: int = 0

    def parse(self, line: str) -> Failure | None:
        self.lines += 1
        if m := NEW_CONNECTION.match(line):
            self.pending[m[1]] = (_host(m[1]), self.lines)
            self._forget_old()
            return None
        if m := LOGGED_IN.match(line):
            self.pending.pop(m[1].rstrip("."), None)
            return None
        if m := NOT_AUTHORISED.match(line):
            client_id = None if m[1] == "<unknown>" else m[1]
            return Failure("not_authorised", self._settle(), client_id)
        if UNKNOWN_GONE.match(line):
            self._settle()
            return None
        if m := TLS_FAILED.match(line):
            return Failure("tls_handshake", m[1], detail=m[2])
        if m := OPENSSL.match(line):
            return Failure("tls_error", detail=m[1])
        return None

    def _settle(self) -> str | None:
        """The address of the connection that just went, when only one address is waiting."""
        hosts = {host for host, _ in self.pending.values()}
        if len(hosts) != 1:
            return None
        self.pending.popitem(last=False)
        return hosts.pop()

    def _forget_old(self) -> None:
        while self.pending and (len(self.pending) > PENDING or
                                next(iter(self.pending.values()))[1] < self.lines - PENDING_LINES):
            self.pending.popitem(last=False)


class LogTail:
    """New complete lines of a file that logrotate may move away or truncate.

    Starts at the end of the file (a restart does not count old lines again); a new file at
    the path (rotation) is read from its start once the old one is read to its end; a file
    that shrank (copytruncate) is read again from its start.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.handle: BinaryIO | None = None
        self.inode: tuple[int, int] | None = None
        self.offset = 0
        self.partial = b""
        self.skipping = False  # inside a line longer than MAX_LINE, which is dropped
        self.first = True

    def read(self, limit: int = READ_BYTES) -> tuple[list[str], bool]:
        """(lines, more waiting)."""
        if self.handle is None:
            # A file there at the start is read from its end; one that appears later, whole.
            at_end, self.first = self.first, False
            if not self._open(at_end=at_end):
                return [], False
        assert self.handle is not None
        try:
            size = os.fstat(self.handle.fileno()).st_size
        except OSError:
            size = 0
        if size < self.offset:
            log.info("%s was truncated; reading it from the start", self.path)
            self.offset, self.partial, self.skipping = 0, b"", False
        self.handle.seek(self.offset)
        data = self.handle.read(limit)
        self.offset += len(data)
        if not data and self._rotated():
            self.handle.close()
            self.handle = None
            self.partial, self.skipping = b"", False
            log.info("%s was rotated; reading the new file from its start", self.path)
            if not self._open(at_end=False):
                return [], False
            return [], True
        *complete, self.partial = (self.partial + data).split(b"\n")
        if complete and self.skipping:
            complete, self.skipping = complete[1:], False  # the end of an overlong line
        if len(self.partial) > MAX_LINE:
            self.partial, self.skipping = b"", True
        lines = [line.decode("utf-8", "replace").rstrip("\r")
                 for line in complete if len(line) <= MAX_LINE]
        return lines, self.offset < size

    def _open(self, *, at_end: bool) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - kept open across steps
        except OSError:
            return False
        stat = os.fstat(handle.fileno())
        self.handle, self.inode = handle, (stat.st_dev, stat.st_ino)
        self.offset = stat.st_size if at_end else 0
        return True

    def _rotated(self) -> bool:
        try:
            stat = os.stat(self.path)
        except OSError:
            return False  # moved away, nothing new yet: keep the old file until one appears
        return (stat.st_dev, stat.st_ino) != self.inode

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class BrokerAuthFailures:
    """Failed logins in the broker's log, as at most one `broker_auth_failures` event every
    `interval` (warning; details: count, byKind, byAddress, examples, totalSinceStart).

    A brute-force attempt therefore adds one row per interval, however fast it goes. The
    counts wait in memory until they are reported; an event whose transaction was rolled back
    is noticed on the next step and its counts are reported again.
    """

    def __init__(self, log_file: Path, *, interval_seconds: float = 300):
        self.tail = LogTail(log_file)
        self.parser = LoginLog()
        self.interval = timedelta(seconds=interval_seconds)
        self.failures: list[Failure] = []
        self.total = 0
        self.reported_at: datetime | None = None
        self.unconfirmed: tuple[int, list[Failure]] | None = None
        self._said_missing = False

    def __call__(self, session: Session, now: datetime) -> bool:
        self._confirm(session)
        lines, more = self.tail.read()
        if self.tail.handle is None and not self._said_missing:
            log.warning("broker log %s cannot be read; failed logins are not counted",
                        self.tail.path)
            self._said_missing = True
        for line in lines:
            failure = self.parser.parse(line)
            if failure is not None:
                self.failures.append(failure)
                self.total += 1
        if not more and self.failures and (
                self.reported_at is None or now - self.reported_at >= self.interval):
            self._report(session, now)
        return more

    def _report(self, session: Session, now: datetime) -> None:
        failures, self.failures = self.failures, []
        kinds = Counter(f.kind for f in failures)
        addresses = Counter(f.address for f in failures if f.address)
        by_address: dict[str, int] = {
            safe_text(a): n for a, n in addresses.most_common(ADDRESSES)}
        if len(addresses) > ADDRESSES:
            by_address["other"] = sum(n for _, n in addresses.most_common()[ADDRESSES:])
        event = new_event(
            "broker_auth_failures", "warning", now, count=len(failures),
            byKind=dict(sorted(kinds.items())), byAddress=by_address,
            examples=[f.as_json() for f in failures[:EXAMPLES]], totalSinceStart=self.total,
        )
        session.add(event)
        session.flush()
        self.unconfirmed = (event.id, failures)
        self.reported_at = now
        log.warning("broker: %d failed logins since the last report (%s), %d since start",
                    len(failures), ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
                    self.total)

    def _confirm(self, session: Session) -> None:
        if self.unconfirmed is None:
            return
        event_id, failures = self.unconfirmed
        self.unconfirmed = None
        stored = session.get(Event, event_id)
        # SQLite may give a rolled-back row's id to the next event, so check what it is.
        if stored is None or (stored.type, stored.occurred_at) != ("broker_auth_failures",
                                                                   self.reported_at):
            self.failures[:0] = failures
            self.reported_at = None

"""Acknowledge a device message to the broker only once it is committed.

The broker forgets a QoS 1 message when we acknowledge it (PUBACK). Acknowledged on arrival,
as paho does by default, a message the writer had not committed yet was lost when the writer
died. So paho runs with manual acks and this ledger sends each PUBACK when the sink reports
the message committed, or rejected and counted: handled for good either way. What is not
acknowledged when the process dies, the broker sends again to the next start (same client id,
kept session): at least once, never lost.

Every message handed to the sink takes the next sequence number, and the sink reports
"committed through N": it writes in arrival order, so what it committed is always a prefix.
The PUBACKs go out in arrival order too, as MQTT asks of a receiver.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class Acknowledger:
    def __init__(self, ack: Callable[[int, int], Any]):
        self.ack = ack  # paho's client.ack(mid, qos)
        # Held while a PUBACK is queued and while a connection is declared lost, so that no
        # PUBACK of one connection is queued on the next (see connection_lost).
        self.lock = threading.Lock()
        self.connection = 0
        self.taken = 0  # messages handed to the sink: the last sequence number given
        # (sequence, connection, mid, qos): appended by paho's thread, taken by the main loop.
        self.waiting: deque[tuple[int, int, int, int]] = deque()
        self.sent = 0

    # paho's network thread

    def took(self, mid: int, qos: int) -> None:
        """A message was handed to the sink: acknowledge it once the sink committed it."""
        self.taken += 1
        self._hold(self.taken, mid, qos)

    def skipped(self, mid: int, qos: int) -> None:
        """A message the sink could not take (logged). Nothing will be written, and held back
        it would come again after every restart, so it is acknowledged as soon as the
        messages before it are."""
        self._hold(self.taken, mid, qos)

    def _hold(self, sequence: int, mid: int, qos: int) -> None:
        if qos:  # QoS 0 has no acknowledgement
            self.waiting.append((sequence, self.connection, mid, qos))

    def connection_lost(self) -> None:
        """The broker sends what we did not acknowledge again on the next connection, under
        the packet ids it had. It may then reuse an id once that copy is acknowledged, so a
        late PUBACK for the first copy could acknowledge some other, uncommitted message.
        Messages of a lost connection are therefore never acknowledged: their second copies
        are (a committed first copy is then written twice: at least once)."""
        with self.lock:
            self.connection += 1

    # the main loop

    def release(self, committed: int) -> int:
        """Acknowledge, in order, every waiting message up to sequence `committed`.

        Called off paho's thread, which is safe: paho's ack() only appends the PUBACK to its
        outgoing deque and wakes the network thread through its socket pair (paho 2.2,
        Client._packet_queue); that thread writes it."""
        sent = 0
        with self.lock:
            while self.waiting and self.waiting[0][0] <= committed:
                _sequence, connection, mid, qos = self.waiting.popleft()
                if connection == self.connection:
                    self.ack(mid, qos)
                    sent += 1
        self.sent += sent
        return sent

    def unacknowledged(self) -> int:
        return len(self.waiting)

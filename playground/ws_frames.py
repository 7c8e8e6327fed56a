"""Daphne's websocket text frames, built in one step when nothing special applies.

Daphne sends each text message through autobahn's `sendMessage`, `sendFrame` and
`sendData`: argument asserts, traffic counters, fragmentation and compression
checks, and debug log calls whose arguments (`hltype`, `hlval`) are built even
with debug logging off: 8.4 µs of CPU per relayed event on this machine, against
1.2 µs here (a 100-byte event written to a test transport, best of 5 × 20,000).

`server_send` writes the frame autobahn would write (FIN, text opcode, the
length in 7, 16 or 64 bits, no mask: a server does not mask) when the
connection is open and nothing is negotiated or queued that changes the frame:
no per-message compression, no automatic fragmentation, no frame or octet
logging, no timing, nothing waiting in autobahn's send queue. Otherwise, and for
binary messages, Daphne's own `serverSend` runs unchanged.

Daphne's message size limit (`--websocket_max_message_size`, 1 MiB) guards what
clients send; autobahn also applies it to what the server sends, so a run's final
event for an answer of about half a megabyte (its text is in it twice: the run's
choices and the stored messages) raised PayloadExceededError in the consumer and
the browser never heard the run end. Text frames here are not limited by it.
autobahn's traffic counters move as they would (tests/test_ws_frames.py compares
them all); Daphne's debug line per frame is not logged.

It also bounds what a connection may leave unsent (DESIGN trap 12): Daphne queues
every frame for a client that stops reading, without limit, so the channel layer's
bounded queue never fills for it and its backlog grows in this process's memory
(once the kernel's send buffer, autotuned up to 4 MB here, is full). A connection
is dropped when, each time it was checked for `settings.WS_BACKLOG_SECONDS` (as a
frame is sent, at most ten times a second), more than `settings.WS_BACKLOG_BYTES`
of earlier frames were not yet acknowledged by the client (in Twisted's buffer and
the kernel's send queue); a connection found over the bound is checked again on a
reactor timer until it is back under it or dropped, so a client that stops reading
after a burst, with no frame after it, does not keep its backlog. The browser
reconnects and resumes from a snapshot, as for a client the channel layer closed
(4008). The time is what lets a client that reads slowly take a snapshot larger
than the bound (a long answer with logprobs) without being dropped for it, and again
on reconnect.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import struct
import sys
import termios
import time

from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings

logger = logging.getLogger(__name__)

_daphne_server_send = WebSocketProtocol.serverSend


_OUTQ = getattr(termios, "TIOCOUTQ", None)  # Linux: bytes in a socket's send queue


def backlog(transport) -> int:
    """Bytes written to a connection that its client has not acknowledged: Twisted's
    buffer, plus the kernel's send queue where the system tells it (1.3-1.5 µs in all)."""
    queued = getattr(transport, "dataBuffer", b"")
    waiting = len(queued) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)
    if _OUTQ is not None:
        with contextlib.suppress(AttributeError, OSError, ValueError):  # not a socket, or closed
            waiting += int.from_bytes(fcntl.ioctl(transport.fileno(), _OUTQ, b"\0\0\0\0"), sys.byteorder)
    return waiting


def frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size <= 125:
        head = bytes((0x81, size))
    elif size <= 0xFFFF:
        head = b"\x81\x7e" + struct.pack("!H", size)
    else:
        head = b"\x81\x7f" + struct.pack("!Q", size)
    return head + payload


BACKLOG_CHECK_SECONDS = 0.1  # at most this often per connection: the frames between are free


def too_far_behind(self: WebSocketProtocol) -> bool:
    """Whether the client has left more than the bound unread for the allowed time."""
    now = time.monotonic()
    checked = getattr(self, "backlog_checked", -BACKLOG_CHECK_SECONDS)
    if now - checked < BACKLOG_CHECK_SECONDS:
        # The frames sent meanwhile are measured then, even if no other frame follows.
        recheck_later(self, checked + BACKLOG_CHECK_SECONDS - now)
        return False
    self.backlog_checked = now
    waiting = backlog(self.transport)
    if waiting <= settings.WS_BACKLOG_BYTES:
        self.behind_since = None
        return False
    since = getattr(self, "behind_since", None) or now
    self.behind_since = since
    if now - since < settings.WS_BACKLOG_SECONDS:
        recheck_later(self, since + settings.WS_BACKLOG_SECONDS - now)
        return False
    logger.warning(
        "Dropped websocket %s: over PLAYGROUND_WS_BACKLOG_BYTES unread for %.1f s (%d bytes now); "
        "it resyncs on reconnect",
        self.client_addr,
        now - since,
        waiting,
    )
    return True


def recheck_later(self: WebSocketProtocol, seconds: float) -> None:
    """Check the connection's backlog again in `seconds`, whether or not a frame is sent
    meanwhile; one timer per connection at a time."""
    reactor = getattr(self.transport, "reactor", None)  # a TCP connection's: Daphne's reactor
    if getattr(self, "backlog_timer", None) is not None or reactor is None:
        return
    self.backlog_timer = reactor.callLater(max(seconds, 0), recheck, self)


def recheck(self: WebSocketProtocol) -> None:
    self.backlog_timer = None
    drop_if_behind(self)


def drop_if_behind(self: WebSocketProtocol) -> None:
    if self.state == self.STATE_OPEN and too_far_behind(self):
        self.wasNotCleanReason = "client too far behind"  # autobahn logs it too
        self.dropConnection(abort=True)


def server_send(self: WebSocketProtocol, content, binary: bool = False) -> None:
    drop_if_behind(self)
    if self.state == self.STATE_CLOSED:
        return  # dropped (above, or by autobahn) before Daphne heard: as Daphne does after
    if binary or self.state != self.STATE_OPEN:
        return _daphne_server_send(self, content, binary)
    payload = content.encode("utf8")
    size = len(payload)
    if (
        self._perMessageCompress is not None
        or self.send_queue
        or self.trackedTimings
        or self.logFrames
        or self.logOctets
        or self.maskServerFrames
        or 0 < self.autoFragmentSize < size
    ):
        return _daphne_server_send(self, content, binary)
    data = frame(payload)
    stats = self.trafficStats
    stats.outgoingWebSocketMessages += 1
    stats.outgoingOctetsAppLevel += size
    stats.outgoingOctetsWebSocketLevel += size
    stats.outgoingWebSocketFrames += 1
    stats.outgoingOctetsWireLevel += len(data)
    self.transport.write(data)


def install() -> None:
    """Idempotent; called when the ASGI application is imported, as eager_write is."""
    WebSocketProtocol.serverSend = server_send


def installed() -> bool:
    return WebSocketProtocol.serverSend is server_send

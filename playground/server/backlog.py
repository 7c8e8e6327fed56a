"""The bound on what a websocket connection may leave unread (a feature, always installed).

Daphne queues every frame for a client that stops reading, without limit, so the
channel layer's bounded queue never fills for it and its backlog grows in this
process's memory. A connection is dropped when, each time it was checked for
`settings.WS_BACKLOG_SECONDS` (as a frame is sent, at most ten times a second), more
than `settings.WS_BACKLOG_BYTES` of earlier frames were not yet acknowledged by the
client (in Twisted's buffer and the kernel's send queue). A connection found over the
bound is checked again on a reactor timer until it is back under it or dropped, so a
client that stops reading after a burst is dropped too. The browser reconnects and
resumes from a snapshot, as for a client the channel layer closed (4008).

`install()` wraps Daphne's `WebSocketProtocol.serverSend`: the check, then the frame
goes out through `send_frame` (Daphne's own, or the ws_frames fast path when that is
on). It checks Daphne's and Twisted's internals first; if they changed it logs one
warning and Daphne's send stays as it is (no bound).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sys
import termios
import time
from collections.abc import Callable

from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from twisted.internet import abstract

from playground.server import checks

logger = logging.getLogger("playground.server.backlog")

NAME = "websocket backlog bound (PLAYGROUND_WS_BACKLOG_BYTES)"

daphne_server_send = WebSocketProtocol.serverSend  # Daphne's own, before any wrapper
# What sends a frame once the backlog is checked: Daphne's, or ws_frames.server_send.
send_frame: Callable[..., None] = daphne_server_send

_OUTQ = getattr(termios, "TIOCOUTQ", None)  # Linux: bytes in a socket's send queue
BACKLOG_CHECK_SECONDS = 0.1  # at most this often per connection: the frames between are free


def backlog(transport) -> int:
    """Bytes written to a connection that its client has not acknowledged: Twisted's
    buffer, plus the kernel's send queue where the system tells it."""
    queued = getattr(transport, "dataBuffer", b"")
    waiting = len(queued) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)
    if _OUTQ is not None:
        with contextlib.suppress(AttributeError, OSError, ValueError):  # not a socket, or closed
            waiting += int.from_bytes(fcntl.ioctl(transport.fileno(), _OUTQ, b"\0\0\0\0"), sys.byteorder)
    return waiting


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
    """Daphne's `serverSend`, after the backlog check; nothing is sent once dropped."""
    drop_if_behind(self)
    if self.state == self.STATE_CLOSED:
        return  # dropped (above, or by autobahn) before Daphne heard: as Daphne does after
    send_frame(self, content, binary)


def missing() -> list[str]:
    found = checks.parameters(daphne_server_send, ("self", "content", "binary"))
    found += checks.attributes(WebSocketProtocol, ("STATE_OPEN", "STATE_CLOSED", "dropConnection"))
    if not found:
        found += checks.parameters(WebSocketProtocol.dropConnection, ("abort",))
    found += checks.sets(WebSocketProtocol.onConnect, ("client_addr",))
    # How much a Twisted connection still holds: its buffers.
    found += checks.attributes(abstract.FileDescriptor, ("dataBuffer", "offset"))
    found += checks.sets(abstract.FileDescriptor.__init__, ("_tempDataLen",))
    return found


def install() -> bool:
    """Wrap Daphne's serverSend with the check; idempotent. False (and one warning) when
    Daphne's or Twisted's internals changed."""
    if WebSocketProtocol.serverSend is server_send:
        return True
    if problems := missing():
        return checks.refuse(NAME, problems)
    WebSocketProtocol.serverSend = server_send
    return True


def installed() -> bool:
    return WebSocketProtocol.serverSend is server_send


def send_frames_with(sender: Callable[..., None]) -> None:
    """Send the frames that pass the check with `sender` (it falls back to Daphne's)."""
    global send_frame
    send_frame = sender

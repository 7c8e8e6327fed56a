"""Twisted TCP writes that go out at once when nothing is queued before them.

Twisted buffers every `transport.write()` and sends it on the reactor's next
turn: it registers the socket for writability (an `epoll_ctl`), waits for the
selector to say so, sends, and unregisters it (another `epoll_ctl`). Daphne
writes each websocket frame that way, so every relayed event cost two extra
system calls, a selector round and four Python calls through the asyncio
reactor; measured with py-spy at 50 streams, that was about a tenth of the
event loop's time.

asyncio's own transports (and uvloop's) try `send()` first and only buffer
what the kernel did not take. This does the same for Twisted's plain TCP
connections: when the connection's buffer is empty, the bytes are sent now;
whatever is left (a full socket buffer, an error) takes Twisted's buffered
path unchanged, so ordering, producers, half-close and error handling stay
Twisted's. TLS connections are left alone (TLS is Daphne's reverse proxy's job
here, and its writes go through the TLS protocol anyway).
"""

from __future__ import annotations

from twisted.internet import tcp

_buffered_write = tcp.Connection.write


def _write(self: tcp.Connection, data: bytes) -> None:
    if (
        data
        and not self.TLS
        and self.connected
        and not self.disconnecting
        and not self._aborting  # Twisted drops writes after abortConnection(); so do we
        and not self._writeDisconnected
        # A pull producer is asked for more from doWrite(), which an eager send skips.
        and (self.producer is None or self.streamingProducer)
        and not self._tempDataBuffer
        and self.offset == len(self.dataBuffer)  # nothing queued before these bytes
        and isinstance(data, bytes)
    ):
        try:
            sent = self.socket.send(data)
        except OSError:
            # Would block, or the connection failed: the buffered path sends it later or
            # finds the failure on its next write, and closes the connection as usual.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    _buffered_write(self, data)


def install() -> None:
    """Idempotent; called when the ASGI application is imported (as Daphne does)."""
    tcp.Connection.write = _write


def installed() -> bool:
    return tcp.Connection.write is _write

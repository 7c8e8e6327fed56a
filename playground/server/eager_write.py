"""Fast path `eager_write`: Twisted TCP writes that go out at once when nothing is queued.

`tcp.Connection.write` sends the bytes with one `socket.send()` when the connection's
buffers are empty, it is connected, not closing, aborted or half-closed, not TLS, and
no pull producer waits on `doWrite()`; whatever the kernel does not take (a full
socket buffer, an error) takes Twisted's buffered path unchanged, so ordering,
producers, half-close and error handling stay Twisted's. TLS connections are left
alone.

Its `install()` checks that `tcp.Connection.write` is still Twisted's own (the TLS
mixin's, over `FileDescriptor.write`) and that the connection state read here exists.
"""

from __future__ import annotations

from twisted.internet import abstract, tcp

from playground.server import checks

NAME = "fast path eager_write"

twisted_write = tcp.Connection.write  # Twisted's own, before install()

STATE = ("TLS", "connected", "disconnecting", "_aborting", "_writeDisconnected", "producer")
STATE += ("streamingProducer", "offset", "dataBuffer")


def write(self: tcp.Connection, data: bytes) -> None:
    """Twisted's `write`, sending at once what nothing is queued before."""
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
    twisted_write(self, data)


def missing() -> list[str]:
    found = []
    if getattr(twisted_write, "__qualname__", "") != "ConnectionMixin.write":
        found.append(f"tcp.Connection.write is {checks.qualname(twisted_write)}, not Twisted's TLS mixin's")
    found += checks.attributes(tcp.Connection, STATE)
    found += checks.sets(abstract.FileDescriptor.__init__, ("_tempDataBuffer",))
    found += checks.sets(tcp.Connection.__init__, ("socket",))
    return found


def install() -> bool:
    """Replace `tcp.Connection.write`; idempotent."""
    if tcp.Connection.write is write:
        return True
    if problems := missing():
        return checks.refuse(NAME, problems)
    tcp.Connection.write = write
    return True

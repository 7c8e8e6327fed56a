"""Fast path `ws_frames`: Daphne's websocket text frames built in one step.

`server_send` writes the frame autobahn would write (FIN, text opcode, the length in
7, 16 or 64 bits, no mask: a server does not mask) when the connection is open and
nothing is negotiated or queued that changes the frame: no per-message compression,
no automatic fragmentation, no frame or octet logging, no timing, nothing waiting in
autobahn's send queue. Otherwise, and for binary messages, Daphne's own `serverSend`
runs. autobahn's traffic counters move as they would; Daphne's debug line per frame
is not logged. Text frames sent here are not held to Daphne's incoming message size
limit (`--websocket_max_message_size`), which autobahn also applies to what the
server sends.

It sends the frames that pass the backlog check (playground.server.backlog). Its
`install()` builds a Daphne protocol on a string transport and checks that it has the
attributes read here and that one frame sent both ways is the same bytes.
"""

from __future__ import annotations

import struct

from daphne.ws_protocol import WebSocketProtocol

from playground.server import backlog, checks

NAME = "fast path ws_frames"

daphne_server_send = backlog.daphne_server_send

# What autobahn's sendMessage reads that would change the frame written here.
FRAME_SETTINGS = (
    "_perMessageCompress",
    "send_queue",
    "trackedTimings",
    "logFrames",
    "logOctets",
    "maskServerFrames",
    "autoFragmentSize",
    "trafficStats",
    "transport",
    "state",
)
COUNTERS = (
    "outgoingWebSocketMessages",
    "outgoingOctetsAppLevel",
    "outgoingOctetsWebSocketLevel",
    "outgoingWebSocketFrames",
    "outgoingOctetsWireLevel",
)


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


def server_send(self: WebSocketProtocol, content, binary: bool = False) -> None:
    """Daphne's `serverSend` for an open connection, a text frame in one step."""
    if binary or self.state != self.STATE_OPEN:
        return daphne_server_send(self, content, binary)
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
        return daphne_server_send(self, content, binary)
    data = frame(payload)
    stats = self.trafficStats
    stats.outgoingWebSocketMessages += 1
    stats.outgoingOctetsAppLevel += size
    stats.outgoingOctetsWebSocketLevel += size
    stats.outgoingWebSocketFrames += 1
    stats.outgoingOctetsWireLevel += len(data)
    self.transport.write(data)


def probe() -> WebSocketProtocol:
    """A Daphne websocket protocol, open, writing to a string."""
    from autobahn.twisted.websocket import WebSocketServerFactory
    from twisted.internet.testing import StringTransport

    factory = WebSocketServerFactory()
    factory.protocol = WebSocketProtocol
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.state = protocol.STATE_OPEN
    protocol.client_addr = ["127.0.0.1", 0]
    return protocol


def missing() -> list[str]:
    found = checks.parameters(daphne_server_send, ("self", "content", "binary"))
    try:
        protocol = probe()
    except Exception as exc:  # any change in how autobahn builds a protocol
        return [*found, f"a Daphne websocket protocol could not be built ({exc!r})"]
    found += checks.attributes(protocol, FRAME_SETTINGS)
    if found:
        return found
    found += checks.attributes(protocol.trafficStats, COUNTERS)
    if found:
        return found
    text = "é" * 100  # 200 bytes: a 16-bit length
    daphne_server_send(protocol, text)
    theirs = protocol.transport.value()
    protocol.transport.clear()
    server_send(protocol, text)
    if protocol.transport.value() != theirs:
        found.append("autobahn's text frame (it differs from the one built here)")
    return found


def install() -> bool:
    """Send text frames through `server_send`, after the backlog check; idempotent."""
    if problems := missing():
        return checks.refuse(NAME, problems)
    if backlog.installed():
        backlog.send_frames_with(server_send)
    else:  # the backlog bound is off (its own warning said why): frames only
        WebSocketProtocol.serverSend = server_send
    return True

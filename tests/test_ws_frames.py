"""Text frames built in one step are byte for byte the frames autobahn builds, and the rest is autobahn's."""

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet.testing import StringTransport

from playground import ws_frames


@pytest.fixture
def protocol():
    """A Daphne websocket protocol, open, writing to a string."""
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketProtocol
    proto = factory.buildProtocol(None)
    proto.makeConnection(StringTransport())
    proto.state = proto.STATE_OPEN
    proto.client_addr = ["127.0.0.1", 1]
    return proto


def sent(proto, send, text: str, binary: bool = False) -> bytes:
    proto.transport.clear()
    send(proto, text, binary)
    return proto.transport.value()


# Each length class of RFC 6455: 7 bits, 16 bits, 64 bits, and their edges.
@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_a_text_frame_is_the_frame_autobahn_writes(protocol, size):
    text = "é" * (size // 2) + "x" * (size % 2)  # two bytes a character: sizes in bytes
    theirs = sent(protocol, ws_frames._daphne_server_send, text)
    before = vars(protocol.trafficStats).copy()
    ours = sent(protocol, ws_frames.server_send, text)
    assert ours == theirs
    after = vars(protocol.trafficStats)
    assert after["outgoingWebSocketMessages"] == before["outgoingWebSocketMessages"] + 1
    assert after["outgoingWebSocketFrames"] == before["outgoingWebSocketFrames"] + 1
    assert after["outgoingOctetsAppLevel"] == before["outgoingOctetsAppLevel"] + size


def test_whatever_changes_the_frame_takes_autobahns_path(protocol, monkeypatch):
    calls = []
    monkeypatch.setattr(ws_frames, "_daphne_server_send", lambda *args: calls.append(args))

    ws_frames.server_send(protocol, b"\x00\x01", True)  # binary
    protocol.send_queue.append((b"queued", False))  # something is waiting to go before it
    ws_frames.server_send(protocol, "after the queue")
    protocol.send_queue.clear()
    protocol.maxMessagePayloadSize = 10  # over the limit: autobahn refuses it
    ws_frames.server_send(protocol, "a message longer than ten bytes")
    protocol.maxMessagePayloadSize = 0
    protocol.autoFragmentSize = 4  # fragmented
    ws_frames.server_send(protocol, "fragment me")
    protocol.autoFragmentSize = 0
    protocol.state = protocol.STATE_CLOSING
    ws_frames.server_send(protocol, "too late")
    assert len(calls) == 5
    assert protocol.transport.value() == b""

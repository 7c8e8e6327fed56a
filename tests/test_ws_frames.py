"""Text frames built in one step are byte for byte the frames autobahn builds, and the rest is autobahn's."""

import pytest
from autobahn.exception import PayloadExceededError
from daphne.ws_protocol import WebSocketProtocol

from playground.server import ws_frames
from tests.fastpaths import needs

pytestmark = needs("ws_frames")


@pytest.fixture
def protocol():
    """A Daphne websocket protocol, open, writing to a string."""
    return ws_frames.probe()


def sent(proto, send, text: str, binary: bool = False) -> bytes:
    proto.transport.clear()
    send(proto, text, binary)
    return proto.transport.value()


# Each length class of RFC 6455: 7 bits, 16 bits, 64 bits, and their edges.
@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_a_text_frame_is_the_frame_autobahn_writes(protocol, size):
    text = "é" * (size // 2) + "x" * (size % 2)  # two bytes a character: sizes in bytes
    start = vars(protocol.trafficStats).copy()
    theirs = sent(protocol, ws_frames.daphne_server_send, text)
    middle = vars(protocol.trafficStats).copy()
    ours = sent(protocol, ws_frames.server_send, text)
    assert ours == theirs
    end = vars(protocol.trafficStats)
    moved_by_theirs = {name: middle[name] - start[name] for name in start if middle[name] != start[name]}
    moved_by_ours = {name: end[name] - middle[name] for name in middle if end[name] != middle[name]}
    assert moved_by_ours == moved_by_theirs
    assert moved_by_ours.get("outgoingOctetsAppLevel", 0) == size


CHANGES = {
    "binary": None,
    "queued before it": ("send_queue", [(b"queued", False)]),
    "fragmented": ("autoFragmentSize", 4),
    "compressed": ("_perMessageCompress", object()),
    "timed": ("trackedTimings", object()),
    "frames logged": ("logFrames", True),
    "octets logged": ("logOctets", True),
    "masked": ("maskServerFrames", True),
    "closing": ("state", WebSocketProtocol.STATE_CLOSING),
}


@pytest.mark.parametrize("change", CHANGES)
def test_whatever_changes_the_frame_takes_autobahns_path(protocol, monkeypatch, change):
    calls = []
    monkeypatch.setattr(ws_frames, "daphne_server_send", lambda *args: calls.append(args))
    if CHANGES[change] is None:
        ws_frames.server_send(protocol, b"\x00\x01", True)
    else:
        name, value = CHANGES[change]
        setattr(protocol, name, value)
        ws_frames.server_send(protocol, "a message longer than ten bytes")
    assert len(calls) == 1
    assert protocol.transport.value() == b""


def test_the_servers_own_messages_are_not_held_to_the_clients_size_limit(protocol):
    """Daphne's 1 MiB limit is for what clients send; a long answer's final event is larger."""
    protocol.maxMessagePayloadSize = 1024
    text = "x" * 5000
    with pytest.raises(PayloadExceededError):
        ws_frames.daphne_server_send(protocol, text)
    assert sent(protocol, ws_frames.server_send, text) == ws_frames.frame(text.encode())

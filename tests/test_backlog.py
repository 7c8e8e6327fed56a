"""A browser that stops reading is dropped once its unsent frames pass the bound, and
resumes from a snapshot when it reconnects; a browser that reads is not disturbed.

A real Daphne, a real Demo run, and a websocket client that shakes hands and then
never reads (with a small receive buffer, so the kernel holds little for it).
"""

import asyncio
import base64
import os
import socket
import time

import pytest

from playground.server import backlog
from playground.server.ws_frames import probe
from tests.events import text_of
from tests.servers import AppServer, Client, app_database
from tests.test_scaleout import connect, expected_lorem, next_event, until

BACKLOG = 64 * 1024


@pytest.fixture(scope="module")
def server():
    settings = {
        "PLAYGROUND_WS_BACKLOG_BYTES": str(BACKLOG),
        "PLAYGROUND_WS_BACKLOG_SECONDS": "1",
        "PLAYGROUND_DEMO_MAX_TOKENS": "100000",  # the run below asks for 100,000 tokens
    }
    with app_database(**settings) as env, AppServer(env) as server:
        yield server


def stalled_websocket(client: Client, conversation: int) -> socket.socket:
    """A websocket that completes its handshake, then reads nothing more."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sets the window
    sock.connect(("127.0.0.1", int(client.url.rsplit(":", 1)[1])))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/conversations/{conversation}/ HTTP/1.1\r\nHost: {client.url[7:]}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {client.url}\r\nCookie: {client.cookie_header}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def wait_for_log(server: AppServer, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (output := server.output()):
            return output
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the Daphne log:\n{server.output()[-2000:]}")


def how_it_ends(sock: socket.socket) -> str:
    """Read what the kernel holds until the connection ends (a timeout raises)."""
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    return "closed"


# In both modes: its run's final event carries the answer (about 600 KB) once, under the
# 1 MiB that stock autobahn allows what the server sends.
async def test_a_browser_that_stops_reading_is_dropped_and_resumes_from_a_snapshot(server):
    client = Client(server.url)
    conversation = client.new_conversation()
    reader = await connect(client, conversation)
    assert await next_event(reader) == {"type": "sync", "active": []}
    stalled = stalled_websocket(client, conversation)
    await asyncio.sleep(0.3)  # its consumer joins the conversation's group
    # About 600 KB of answer over 6-7 s: many times the bound plus what the kernel holds.
    max_tokens, rate = 100_000, 15_000
    response = client.submit(
        conversation, client.demo_provider(), "go", stream=True, max_tokens=max_tokens,
        extra_body={"tokens_per_second": rate},
    )  # fmt: skip
    assert response.status_code == 201
    run_id = response.json()["run"]["id"]
    reading = asyncio.ensure_future(until(reader, "run.done"))  # a browser reads as it comes

    log = await asyncio.to_thread(wait_for_log, server, "Dropped websocket")
    assert "over PLAYGROUND_WS_BACKLOG_BYTES unread for " in log
    assert await asyncio.to_thread(how_it_ends, stalled) in ("reset", "closed")
    stalled.close()

    # It comes back while the run still streams: the state so far, then the rest.
    again = await connect(client, conversation)
    resumed = await until(again, "run.done")
    assert resumed[0] == {"type": "sync", "active": [run_id]}
    assert resumed[1]["type"] == "snapshot"
    full = expected_lorem(server.url, max_tokens)
    assert text_of(resumed, run_id) == full
    assert resumed[-1]["run"]["choices"][0]["content"] == full  # and the run's end
    # The browser that kept reading saw the whole answer, undisturbed, and its end.
    seen = await reading
    assert text_of(seen, run_id) == full
    assert seen[-1]["run"]["status"] == "completed"
    await again.close()
    await reader.close()
    assert "Traceback" not in server.output()  # e.g. the final event over Daphne's size limit


async def test_a_client_that_stops_reading_after_a_burst_is_dropped_with_no_frame_after_it(server):
    """The backlog check runs on a timer too: once the burst is over nothing more is sent to
    the stalled client, and it is still dropped within the allowed time."""
    client = Client(server.url)
    conversation = client.new_conversation()
    reader = await connect(client, conversation)
    assert await next_event(reader) == {"type": "sync", "active": []}
    stalled = stalled_websocket(client, conversation)
    await asyncio.sleep(0.3)  # its consumer joins the conversation's group
    before = server.output().count("Dropped websocket")
    # A short burst, several times the bound, sent in well under the allowed second.
    response = client.submit(
        conversation, client.demo_provider(), "go", stream=True, max_tokens=20_000,
        extra_body={"tokens_per_second": 1_000_000},
    )  # fmt: skip
    assert response.status_code == 201
    await until(reader, "run.done")  # the last frame for this conversation
    assert server.output().count("Dropped websocket") == before

    deadline = time.monotonic() + 10
    while server.output().count("Dropped websocket") == before:
        assert time.monotonic() < deadline, server.output()[-2000:]
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(how_it_ends, stalled) in ("reset", "closed")
    stalled.close()
    await reader.close()


def test_a_client_is_dropped_only_after_staying_over_the_backlog_bound(settings, monkeypatch):
    """In both modes: the frames go out through Daphne's send, or ws_frames' when it is on."""
    protocol = probe()
    settings.WS_BACKLOG_BYTES, settings.WS_BACKLOG_SECONDS = 100, 5
    clock = [1000.0]
    monkeypatch.setattr(backlog.time, "monotonic", lambda: clock[0])
    protocol.transport.dataBuffer, protocol.transport.offset = b"x" * 500, 0  # as Twisted's tcp has
    protocol.transport.unregisterProducer = lambda: None  # as Twisted's tcp takes it

    backlog.server_send(protocol, "one")  # over the bound: the clock starts
    clock[0] += 4
    backlog.server_send(protocol, "two")
    backlog.server_send(protocol, "two and a half")  # in the same tenth of a second: not checked
    clock[0] += 0.5
    protocol.transport.dataBuffer = b"x" * 50  # it read: under the bound, the clock stops
    backlog.server_send(protocol, "three")
    protocol.transport.dataBuffer = b"x" * 500
    clock[0] += 1
    backlog.server_send(protocol, "four")  # over again: a new clock, not 5 s yet
    assert protocol.state == protocol.STATE_OPEN
    clock[0] += 5
    backlog.server_send(protocol, "five")
    assert protocol.state == protocol.STATE_CLOSED
    backlog.server_send(protocol, "six")  # after the drop: nothing more is written
    assert protocol.transport.disconnecting
    assert b"five" not in protocol.transport.value()
    assert b"six" not in protocol.transport.value()
    assert b"four" in protocol.transport.value()

"""Twisted TCP writes go out at once when nothing is queued, and keep Twisted's buffering otherwise."""

import contextlib
import socket

import pytest
from twisted.internet.protocol import Protocol
from twisted.internet.selectreactor import SelectReactor

from playground.server import eager_write
from tests.fastpaths import needs

pytestmark = needs("eager_write")


@pytest.fixture
def pair():
    """A Twisted connection over one end of a real socket pair; the reactor never runs."""
    eager_write.install()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.settimeout(2)
    reactor = SelectReactor()
    from twisted.internet import tcp

    connection = tcp.Connection(ours, Protocol(), reactor)
    connection.connected = True
    yield connection, theirs, reactor
    ours.close()
    theirs.close()
    with contextlib.suppress(Exception):  # the reactor's self-pipe
        reactor.removeReader(reactor.waker)
        reactor.waker.connectionLost(None)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        piece = sock.recv(size - len(got))
        assert piece, "the peer closed"
        got += piece
    return got


def test_a_write_is_sent_before_the_reactor_turns(pair):
    connection, theirs, reactor = pair
    connection.write(b"frame one")
    assert read_exactly(theirs, 9) == b"frame one"
    assert connection not in reactor.getWriters()  # no epoll registration for it


def test_what_the_kernel_does_not_take_is_buffered_and_sent_in_order(pair):
    connection, theirs, reactor = pair
    big = bytes(range(256)) * 4096  # 1 MiB: far more than the socket buffers hold
    connection.write(big)
    connection.write(b"after")  # queued behind the rest, never sent ahead of it
    assert connection in reactor.getWriters()
    received = b""
    theirs.setblocking(False)
    while len(received) < len(big) + 5:
        try:
            received += theirs.recv(65536)
        except BlockingIOError:
            connection.doWrite()  # what the reactor does when the socket is writable
    assert received == big + b"after"
    assert connection not in reactor.getWriters()


def test_after_an_abort_nothing_more_is_sent(pair):
    connection, theirs, reactor = pair
    connection.abortConnection()
    connection.write(b"late")
    theirs.setblocking(False)
    with pytest.raises((BlockingIOError, ConnectionResetError)):
        assert theirs.recv(16) == b""  # reset, or nothing at all: never the bytes


def test_a_pull_producer_keeps_twisted_buffering(pair):
    connection, theirs, reactor = pair

    class Pull:
        def resumeProducing(self):
            pass

        def stopProducing(self):
            pass

    connection.registerProducer(Pull(), False)
    connection.write(b"pulled")
    assert connection in reactor.getWriters()  # doWrite will ask the producer for more
    connection.doWrite()
    assert read_exactly(theirs, 6) == b"pulled"


def test_a_broken_connection_is_left_to_twisted(pair):
    connection, theirs, reactor = pair
    theirs.close()
    connection.write(b"x" * 10)
    connection.write(b"y" * 10)
    # The first send may still succeed (the kernel learns of the reset from it); by the
    # second at the latest the bytes are queued for Twisted, whose doWrite reports the loss.
    for _ in range(3):
        if connection in reactor.getWriters():
            break
        connection.write(b"z")
    assert connection in reactor.getWriters()
    assert connection.doWrite() is not None  # CONNECTION_LOST / an error, as Twisted reports it

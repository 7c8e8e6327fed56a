"""Reading an event stream on the server's event loop (the `loop_reader` fast path).

requests sends the request and reads the response's head; the body is then read
on the loop from the socket, its HTTP framing undone here. This reads urllib3's
private `HTTPResponse._fp` (the http.client response under it), so it runs only
when "loop_reader" is in settings.FAST_PATHS and the urllib3 in use still has
what it relies on (`enabled()`, checked once); otherwise `ChatStream.read()`
reads every body on its thread through urllib3's public `read1`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import io
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import requests
import sseclient
import urllib3
from django.conf import settings

from playground.upstream.errors import Cancelled, IncompleteStream, ProtocolError
from playground.upstream.sse import Chunked, EventCutter, Framing, Length

if TYPE_CHECKING:
    from playground.upstream.stream import ChatStream

log = logging.getLogger(__name__)

READ_SIZE = 65536
NAME = "loop_reader"
SUPPORTED_URLLIB3 = 2  # the major version whose HTTPResponse keeps http.client's in `_fp`

_usable: bool | None = None


def enabled() -> bool:
    """Whether the loop reader is on: in FAST_PATHS, and urllib3's internals it reads are
    there (checked at first use; when they are not, one warning, and the stock path)."""
    global _usable
    if NAME not in settings.FAST_PATHS:
        return False
    if _usable is None:
        problem = _missing_internals()
        if problem:
            log.warning("PLAYGROUND_FAST_PATHS: %s is off: %s; streams are read by threads", NAME, problem)
        _usable = not problem
    return _usable


def _missing_internals() -> str:
    """What this module needs of urllib3 and http.client and does not find ("" if none)."""
    major = urllib3.__version__.split(".")[0]
    if major != str(SUPPORTED_URLLIB3):
        return f"urllib3 {urllib3.__version__} is not version {SUPPORTED_URLLIB3}"
    probe = urllib3.response.HTTPResponse(body=io.BytesIO(), preload_content=False)
    if not hasattr(probe, "_fp"):
        return "urllib3's HTTPResponse has no _fp"
    if not hasattr(http.client.HTTPResponse, "read1"):
        return "http.client's HTTPResponse has no read1"
    parser = sseclient.SSEClient(iter(()))
    if vars(parser).keys() != {"_logger", "_event_source", "_char_enc"}:
        return "sseclient-py's SSEClient is not built as QuietSSEClient builds it"
    return ""


class QuietSSEClient(sseclient.SSEClient):
    """sseclient-py's parser, without looking its logger up for each client (the loop
    makes one per batch of whole events it reads). Parsing is sseclient-py's own
    `events()`; this sets the attributes its constructor sets."""

    _log = logging.getLogger(sseclient.__name__)

    def __init__(self, event_source, char_enc: str = "utf-8") -> None:
        self._logger = self._log
        self._event_source = event_source
        self._char_enc = char_enc


def raw_read1(response: requests.Response) -> Callable[[int], bytes]:
    """`read1` of the http.client response under urllib3's, for an uncompressed body: the
    same bytes as urllib3's `read1`, with less Python per read."""
    return (getattr(response.raw, "_fp", None) or response.raw).read1


def start(
    stream: ChatStream, loop: asyncio.AbstractEventLoop, on_chunk: Callable[[dict], None]
) -> concurrent.futures.Future | None:
    """Have `loop` read the rest of `stream` (its head read, its body an uncompressed
    event stream): see `ChatStream.read_on_loop`. None when its framing cannot be read
    here."""
    body = body_framing(stream._response)
    if body is None:
        return None
    done: concurrent.futures.Future = concurrent.futures.Future()
    reader = LoopReader(stream, loop, on_chunk, body, done)
    loop.call_soon_threadsafe(reader.start)
    return done


class LoopReader:
    """Reads one opened stream on an event loop, without a thread waiting for it.

    The loop's selector says when the socket has bytes; they are read once,
    non-blocking, and their whole events parsed at once. requests has already sent
    the request and read the response's head; the body's framing (chunked,
    Content-Length or close-delimited) is undone by `body_framing`, then events are
    cut at their blank lines and parsed by sseclient-py, as in `read()`. Deadlines
    are loop timers. Stop shuts the socket down, which wakes the loop; a stopped
    stream ends as `Cancelled`, whatever the socket returned meanwhile.
    """

    def __init__(
        self,
        stream: ChatStream,
        loop: asyncio.AbstractEventLoop,
        on_chunk: Callable[[dict], None],
        body: Framing,
        done: concurrent.futures.Future,
    ) -> None:
        self.stream = stream
        self.loop = loop
        self.on_chunk = on_chunk
        self.body = body
        self.done = done
        self.sock: socket.socket = stream._sock
        self.fd = self.sock.fileno()
        self.tls = isinstance(self.sock, ssl.SSLSocket)
        self.events = EventCutter(QuietSSEClient)
        self.timer: asyncio.TimerHandle | None = None
        self.watching = False
        self.ended = False  # `done` is resolved (a plain flag: Future.done() takes a lock)

    def start(self) -> None:
        try:
            self.sock.setblocking(False)
            head_bytes = buffered(self.stream._response)  # what came in with the head
            self.loop.add_reader(self.fd, self._readable)
            self.watching = True
            self._arm()
            self._take(head_bytes, eof=False)
            if self.tls and not self.ended:
                self._readable()  # what TLS decrypted beyond http.client's buffer
        except BaseException as exc:
            self._end(exc)

    def _readable(self) -> None:
        try:
            pieces, eof = [], False
            while True:
                try:
                    piece = self.sock.recv(READ_SIZE)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                except OSError as exc:
                    self.stream._raise_if_cancelled()
                    raise IncompleteStream(
                        f"The connection to the relay broke mid-answer ({type(exc).__name__})."
                    ) from None
                eof = not piece
                pieces.append(piece)
                # Bytes TLS has already decrypted raise no readiness on the selector.
                if eof or not (self.tls and self.sock.pending()):
                    break
            if pieces:
                self._take(b"".join(pieces), eof)
        except BaseException as exc:
            self._end(exc)

    def _take(self, data: bytes, eof: bool) -> None:
        if self.ended:
            return
        body = self.body.feed(data)
        body = self.stream.utf8.feed(body, final=eof or self.body.ended or self.body.broken)
        if self._relay(self.events.feed(body)):
            return
        if self.body.broken:
            self.stream._raise_if_cancelled()
            raise IncompleteStream("The relay broke the chunked encoding of its answer.")
        if eof or self.body.ended:
            # As sseclient-py does at EOF, the unterminated tail is an event too; one that
            # does not parse was cut off.
            with contextlib.suppress(ProtocolError):
                if self._relay(self.events.rest()):
                    return
            self.stream._incomplete()

    def _relay(self, events: Iterator[sseclient.Event]) -> bool:
        """Hand each event's chunk on; True once [DONE] ended the stream."""
        for event in events:
            chunk = self.stream._chunk(event.event, event.data)
            if chunk is None:
                self._end(None)
                return True
            self.on_chunk(chunk)
        return False

    def _arm(self) -> None:
        self.timer = self.loop.call_later(self.stream._time_left(), self._deadline)

    def _deadline(self) -> None:
        try:
            self._arm()  # raises once the idle or total deadline has passed
        except BaseException as exc:
            self._end(exc)

    def _end(self, error: BaseException | None) -> None:
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False
        if self.timer is not None:
            self.timer.cancel()
        if error is not None and self.stream.cancel.cancelled and not isinstance(error, Cancelled):
            # Stopped: whatever the shut-down socket gave meanwhile (over TLS, raw bytes)
            # is not the relay's failure.
            error = Cancelled("Stopped.")
        self.ended = True
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)


def buffered(response: requests.Response) -> bytes:
    """Body bytes http.client read along with the head (its socket is non-blocking now)."""
    buffer = response.raw._fp.fp
    try:
        ready = buffer.peek()  # what it holds; b"" when empty and nothing is readable yet
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):  # the same, over TLS
        return b""
    return buffer.read1(len(ready)) if ready else b""


def body_framing(response: requests.Response) -> Framing | None:
    """How to undo this body's framing on a loop; None when only `read()` can read it."""
    head = getattr(response.raw, "_fp", None)
    if not isinstance(head, http.client.HTTPResponse) or head.fp is None:
        return None
    if head.chunked:
        return Chunked()
    if head.length is not None:
        return Length(head.length)
    return Framing()  # close-delimited

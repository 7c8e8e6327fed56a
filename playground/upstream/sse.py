"""Bytes into events: UTF-8 repair, HTTP/1.1 body framing, cutting at blank lines.

sseclient-py parses the events (on either read path); these classes prepare what
it is given. None of them touches a socket.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator

import sseclient

from playground.upstream.errors import ProtocolError

MAX_EVENT_BYTES = 16 * 2**20  # one SSE event, read on the loop


class Utf8Repair:
    """Makes bytes valid UTF-8 as they arrive, for sseclient-py, which decodes strictly.

    Each invalid sequence becomes U+FFFD's bytes, as `bytes.decode(errors="replace")` reads
    it, and is counted in `replaced`. A character split between two pieces is held back
    until its end comes (or, with `final`, counted as invalid). Valid input is returned as
    it is: ASCII at once, the rest after one decode to check it.
    """

    REPLACEMENT = "\ufffd".encode()

    def __init__(self) -> None:
        self.held = b""
        self.replaced = 0

    def feed(self, data: bytes, final: bool = False) -> bytes:
        if data.isascii() and not self.held:
            return data
        if self.held:
            data, self.held = self.held + data, b""
        out = []
        while True:
            try:
                _, used = codecs.utf_8_decode(data, "strict", final)
                break
            except UnicodeDecodeError as error:
                self.replaced += 1
                out += [data[: error.start], self.REPLACEMENT]
                data = data[error.end :]
        if used < len(data):
            data, self.held = data[:used], data[used:]
        return b"".join([*out, data]) if out else data


class EventCutter:
    """Cuts bytes into whole events (at their blank line) for sseclient-py to parse.

    sseclient-py pulls from an iterator and keeps its partial event inside a generator,
    so it cannot be handed bytes as they come. The bytes after the last blank line wait
    here for the rest; whole events go to sseclient-py, which then parses them exactly
    as `read()` does. Each piece is searched once (with the 3 bytes before it, where a
    blank line may begin), so a long event costs linear time, and an event that never
    ends is refused past MAX_EVENT_BYTES.
    """

    BLANK_LINES = (b"\n\n", b"\r\r", b"\r\n\r\n")  # sseclient-py's event ends

    def __init__(self, parser: Callable[[Iterable[bytes]], sseclient.SSEClient] | None = None) -> None:
        self.parser = parser or sseclient.SSEClient  # sseclient-py's SSEClient, or a subclass
        self.held: list[bytes] = []  # bytes after the last blank line
        self.size = 0
        self.edge = b""  # the last 3 of them: a blank line may begin there

    def feed(self, data: bytes) -> Iterator[sseclient.Event]:
        if not data:
            return iter(())
        window = self.edge + data
        end = max(
            (at + len(blank) for blank in self.BLANK_LINES if (at := window.rfind(blank)) >= 0), default=0
        )
        if not end:  # (what is held has no blank line, so one found ends in `data`)
            self.edge = window[-3:]
            self.held.append(data)
            self.size += len(data)
            if self.size > MAX_EVENT_BYTES:
                raise ProtocolError(
                    f"The relay sent {MAX_EVENT_BYTES // 2**20} MB without ending an event "
                    "(a blank line): that is not an event stream as the API sends it."
                )
            return iter(())
        cut = end - len(self.edge)  # where in `data` the last whole event ends
        whole = b"".join([*self.held, data[:cut]])
        rest = data[cut:]
        self.held, self.size, self.edge = ([rest] if rest else []), len(rest), rest[-3:]
        return self.parser((whole,)).events()

    def rest(self) -> Iterator[sseclient.Event]:
        tail = b"".join(self.held)
        self.held, self.size, self.edge = [], 0, b""
        return self.parser((tail,)).events()


class Framing:
    """Undoes an HTTP/1.1 body's framing as bytes arrive; `ended` once the body is whole.

    Broken framing sets `broken`, after returning the bytes decoded before it, so the
    events they hold are still relayed.
    """

    ended = False
    broken = False

    def feed(self, data: bytes) -> bytes:
        return data


_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Chunked(Framing):
    def __init__(self) -> None:
        self.pending = b""
        self.left = 0  # bytes of the current chunk still to come
        self.crlf = False  # a chunk's data ended: its CRLF comes next

    def feed(self, data: bytes) -> bytes:
        pending, out = self.pending + data, []
        while pending and not self.ended and not self.broken:
            if self.left:
                out.append(pending[: self.left])
                self.left -= len(out[-1])
                pending = pending[len(out[-1]) :]
                self.crlf = not self.left
                continue
            if self.crlf:
                if pending.startswith(b"\r\n"):
                    pending = pending[2:]
                elif pending.startswith(b"\n"):
                    pending = pending[1:]
                elif pending != b"\r":
                    self.broken = True
                    break
                else:
                    break
                self.crlf = False
                continue
            end = pending.find(b"\n")
            if end < 0:
                if len(pending) > 1024:
                    self.broken = True
                break
            line, pending = pending[:end], pending[end + 1 :]
            size = line.split(b";", 1)[0].strip()
            # Hex digits only: int() would also take "-1" (and loop here for ever), "0x", "_".
            if not _HEX.fullmatch(size):
                self.broken = True
                break
            self.left = int(size, 16)
            self.ended = self.left == 0  # trailers after the last chunk are not read
        self.pending = pending
        return b"".join(out)


class Length(Framing):
    def __init__(self, length: int) -> None:
        self.left = length
        self.ended = length == 0

    def feed(self, data: bytes) -> bytes:
        data = data[: self.left]
        self.left -= len(data)
        self.ended = self.left == 0
        return data

"""The only module that speaks HTTP to relays (requests + sseclient-py).

`ChatStream` sends one `POST {base_url}/chat/completions` and yields each
`chat.completion.chunk` as soon as its bytes arrive, whether the relay streams
(SSE, chunked or close-delimited) or answers with one JSON body. `Accumulator`
folds chunks into choices, tool calls and usage. Failures raise one small
hierarchy rooted at `UpstreamError`, whose `message` is fit to show a user and
never contains the API key.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import functools
import http.client
import json
import logging
import math
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import sseclient
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from playground import netguard
from playground.keys import Secret, mask

log = logging.getLogger(__name__)

MAX_ERROR_TEXT = 400
READ_SIZE = 65536
MAX_FRAMES = 5000  # raw frames kept per run for the inspector
MAX_FRAME_BYTES = 2_000_000
MAX_EVENT_BYTES = 16 * 2**20  # one SSE event, read on the loop


# ---------------------------------------------------------------------------- errors


class UpstreamError(Exception):
    """A relay failure, with a message fit for the person who sent the prompt."""

    kind = "upstream"
    retryable = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class HTTPStatusError(UpstreamError):
    kind = "http_error"


class AuthError(HTTPStatusError):
    kind = "auth"


class RateLimited(HTTPStatusError):
    kind = "rate_limited"
    retryable = True


class ServerError(HTTPStatusError):
    kind = "server_error"
    retryable = True


class ConnectError(UpstreamError):
    kind = "connect"
    retryable = True


class AddressRefused(ConnectError):
    """The relay's address is one the server must not connect to (playground.netguard)."""

    kind = "refused"
    retryable = False


class UpstreamTimeout(UpstreamError):
    kind = "timeout"
    retryable = True


class ProtocolError(UpstreamError):
    """The relay answered something that is not the chat completions protocol."""

    kind = "protocol"


class IncompleteStream(UpstreamError):
    kind = "incomplete"


class StreamErrorEvent(UpstreamError):
    kind = "stream_error"


class Cancelled(UpstreamError):
    kind = "stopped"


# ---------------------------------------------------------------------------- deadlines, cancel


@dataclass(frozen=True)
class Deadlines:
    """Seconds. requests' read timeout is per socket read, so idle and total are ours."""

    connect: float = 10.0
    first_byte: float = 120.0
    idle: float = 60.0
    total: float = 900.0

    @classmethod
    def from_settings(cls) -> Deadlines:
        return cls(
            connect=settings.UPSTREAM_CONNECT_TIMEOUT,
            first_byte=settings.UPSTREAM_FIRST_BYTE_TIMEOUT,
            idle=settings.UPSTREAM_IDLE_TIMEOUT,
            total=settings.UPSTREAM_TOTAL_TIMEOUT,
        )


class CancelToken:
    """Stops a stream from another thread within a socket round trip.

    Closing a response while another thread blocks in recv() can hang, so cancel()
    shuts the socket down instead; the blocked read then returns at once.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.frames: list[list] = []
        self.frames_bytes = 0
        self.frames_dropped = 0
        # True once a connection to the relay was open: the request then goes out on it.
        self.connected = False

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            self.connected = self.connected or sock is not None
            if self._event.is_set():
                self._shutdown()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            self._shutdown()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when cancelled meanwhile."""
        return self._event.wait(seconds)

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)


# The connection classes below hand each new socket to the token of the stream
# being opened on this thread; one Session per stream keeps that unambiguous. They
# also refuse addresses the server must not reach (playground.netguard): before
# connecting, by what the host resolves to, and after, by the peer actually reached,
# before any byte of the request (and its key) is sent. `_current.own_ok`: the stream
# opened on this thread is the Demo relay's, which is this server.
_current = threading.local()


def _attach_current(sock: socket.socket | None) -> None:
    token = getattr(_current, "token", None)
    if token is not None:
        token.attach(sock)


def _guarded_connect(conn: urllib3.connection.HTTPConnection, connect: Callable[[], None]) -> None:
    own_ok = getattr(_current, "own_ok", False)
    try:
        netguard.check_connect(conn.host, conn.port, own_ok=own_ok)
        connect()
        netguard.check_peer(conn.host, conn.sock, own_ok=own_ok)
    except netguard.Refused as exc:
        conn.close()
        raise AddressRefused(str(exc)) from None
    _attach_current(conn.sock)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        _guarded_connect(self, super().connect)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        _guarded_connect(self, super().connect)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _CancellableAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def new_session() -> requests.Session:
    session = requests.Session()
    # No proxies or .netrc from the environment: a key only goes where it was saved for.
    session.trust_env = False
    # Relays behind a private CA: its certificates, instead of certifi's bundle.
    session.verify = settings.UPSTREAM_CA_BUNDLE or True
    adapter = _CancellableAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# ---------------------------------------------------------------------------- helpers


def wire_json(body: dict) -> str:
    """The request body's text exactly as it goes on the wire (stored with each run)."""
    return json.dumps(body, ensure_ascii=False)


def chat_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/chat/completions"


def build_headers(api_key: Secret | str, extra: dict[str, str] | None, *, stream: bool) -> dict[str, str]:
    """The request's headers; the one place a key is revealed, in its Authorization."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        # Compressed streams are buffered by the decoder; ask for bytes as they are made.
        "Accept-Encoding": "identity",
        "User-Agent": "relay-playground/0.1",
    }
    headers.update(extra or {})
    if api_key:
        headers["Authorization"] = "Bearer " + (api_key.reveal() if isinstance(api_key, Secret) else api_key)
    return headers


def is_event_stream(response: requests.Response) -> bool:
    return "text/event-stream" in response.headers.get("Content-Type", "")


def is_uncompressed(response: requests.Response) -> bool:
    return response.headers.get("Content-Encoding", "identity").lower() in ("", "identity")


def masked_headers(headers: dict[str, str]) -> dict[str, str]:
    shown = dict(headers)
    if "Authorization" in shown:
        shown["Authorization"] = "Bearer " + mask(shown["Authorization"].removeprefix("Bearer "))
    return shown


# A bearer credential in text, up to a quote or backslash so that JSON text stays JSON.
BEARER = re.compile(r"(Bearer\s+)(?!\[api key\])[^\s\"'\\,;]+", re.IGNORECASE)


def scrub(text: str, secret: Secret | str) -> str:
    """Text a relay sent back (a body, a header, a frame) without the key or any bearer value."""
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if value and value in text:
        text = text.replace(value, "[api key]")
    if "earer" in text:
        text = BEARER.sub(r"\1[api key]", text)
    return text


def relay_error_text(body: bytes, secret: Secret | str) -> str:
    """The relay's own words from an error body: JSON error.message, else the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            text = str(err.get("message") or err.get("msg") or err.get("detail") or err)
        elif isinstance(err, str):
            text = err
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "…"
    return scrub(text, secret)


def parse_retry_after(value: str | None, date: str | None = None) -> float | None:
    """The seconds a Retry-After header asks for: delay-seconds, or an HTTP date.

    A date is counted from the response's own Date header when it has one, so a relay
    whose clock is ahead of ours is not retried early; else from our clock.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        until = _http_date(value)
        if until is None:
            return None
        sent = _http_date(date) if date else None
        seconds = until - (time.time() if sent is None else sent)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _http_date(value: str) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime dates and "-0000": HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def wait_text(seconds: float) -> str:
    """A wait as a person reads it, rounded up: never shorter than what was asked."""
    whole = math.ceil(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{math.ceil(whole / 60)} min"
    return f"{math.ceil(whole / 3600)} h"


def status_error(status: int, body: bytes, headers: Any, secret: Secret | str) -> HTTPStatusError:
    said = relay_error_text(body, secret).rstrip(".") or "(no error text)"
    retry_after = parse_retry_after(headers.get("Retry-After"), headers.get("Date"))
    if status in (401, 403):
        what = "rejected the API key" if status == 401 else "refused access"
        return AuthError(f"The relay {what} (HTTP {status}): {said}", status=status)
    if status == 429:
        # A 429 reaches a person only once it is not retried: say when they may try again.
        wait = f" Try again in {wait_text(retry_after)}." if retry_after is not None else ""
        return RateLimited(
            f"The relay is rate-limiting requests (HTTP 429): {said}.{wait}",
            status=status,
            retry_after=retry_after,
        )
    if status == 404:
        return HTTPStatusError(
            f"The relay has no such endpoint or model (HTTP 404): {said}. "
            "Check the base URL (it usually ends in /v1) and the model name.",
            status=status,
        )
    if 300 <= status < 400:
        where = scrub(headers.get("Location", "elsewhere"), secret)
        return HTTPStatusError(
            f"The relay redirected (HTTP {status}) to {where}; save that address as the provider's base URL.",
            status=status,
        )
    if status >= 500:
        return ServerError(f"The relay failed (HTTP {status}): {said}", status=status)
    return HTTPStatusError(f"The relay refused the request (HTTP {status}): {said}", status=status)


def connect_error(exc: Exception, url: str) -> UpstreamError:
    host = urlsplit(url).netloc
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return ConnectError(f"The TLS handshake with {host} failed; check the base URL's scheme.")
    if "Name or service not known" in text or "getaddrinfo" in text or "NameResolution" in text:
        return ConnectError(f"Could not resolve the relay's host name {host}.")
    if "refused" in text.lower():
        return ConnectError(f"Could not connect to {host}: connection refused.")
    return ConnectError(f"Could not connect to {host}: the connection failed.")


def completion_as_chunk(data: dict) -> dict:
    """A non-streamed chat.completion, reshaped as one chunk so callers see one shape."""
    choices = []
    for position, choice in enumerate(data.get("choices") or []):
        message = dict(choice.get("message") or {})
        calls = message.get("tool_calls")
        if calls:
            message["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        choices.append(
            {
                "index": choice.get("index", position),
                "delta": message,
                "finish_reason": choice.get("finish_reason"),
                "logprobs": choice.get("logprobs"),
            }
        )
    return {
        "id": data.get("id"),
        "model": data.get("model"),
        "choices": choices,
        "usage": data.get("usage"),
    }


# ---------------------------------------------------------------------------- the stream


@dataclass
class ChatStream:
    """One chat completion request. Iterate it for chunk dicts, in arrival order.

    After iteration: `status`, `response_headers`, `first_byte_at` (monotonic),
    `frames` (raw event data with milliseconds since the request, capped; a
    third item names a non-default SSE event type) and `retries` describe what
    happened on the wire; `decode_errors` counts the invalid UTF-8 sequences in the
    answer, each read as U+FFFD. `sleep(seconds)` waits
    before a rate-limited retry and returns True when stopped meanwhile; it
    defaults to `cancel.wait`.
    """

    base_url: str
    api_key: Secret
    body: dict
    extra_headers: dict[str, str] = field(default_factory=dict)
    deadlines: Deadlines = field(default_factory=Deadlines)
    cancel: CancelToken = field(default_factory=CancelToken)
    max_retries: int = 2
    max_retry_wait: float = 20.0
    sleep: Callable[[float], bool] | None = None
    # The built-in Demo relay: this server, which other relays may not be (playground.netguard).
    demo: bool = False
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    first_byte_at: float | None = None
    retries: int = 0

    def __post_init__(self) -> None:
        self.started_at = time.monotonic()
        self._last_data_at = self.started_at
        self._sock: socket.socket | None = None
        self._session: requests.Session | None = None
        self._response: requests.Response | None = None
        self.frames: list[list] = []
        self.frames_bytes = 0
        self.frames_dropped = 0
        self._eof = False
        self.utf8 = _Utf8Repair()
        self.streaming = bool(self.body.get("stream"))
        self.headers = build_headers(self.api_key, self.extra_headers, stream=self.streaming)

    @property
    def url(self) -> str:
        return chat_url(self.base_url)

    @property
    def reached(self) -> bool:
        """Whether the request reached the relay: a connection to it was made (the request
        is sent on it). False when it was refused, its name did not resolve, or the request
        was stopped before any connection."""
        return self.status is not None or self.cancel.connected

    @property
    def decode_errors(self) -> int:
        return self.utf8.replaced

    def __iter__(self) -> Iterator[dict]:
        self.open()
        try:
            yield from self.read()
        finally:
            self.close()

    def open(self) -> None:
        """Send the request, retrying rate limits; returns once the response's head is in.

        Then read the body with `read()` (blocking) or `read_on_loop()`, and `close()`.
        """
        self.started_at = self._last_data_at = time.monotonic()
        self._session = new_session()
        _current.token, _current.own_ok = self.cancel, self.demo
        try:
            self._response = self._open(self._session)
        except BaseException:
            self.close()
            raise
        finally:
            _current.token, _current.own_ok = None, False

    def read(self) -> Iterator[dict]:
        """The chunks, blocking this thread while it waits for the relay."""
        response = self._response
        if self.streaming and is_event_stream(response):
            yield from self._events(response)
        else:
            yield self._single(response, response.headers.get("Content-Type", ""))

    def read_on_loop(
        self, loop: asyncio.AbstractEventLoop, on_chunk: Callable[[dict], None]
    ) -> concurrent.futures.Future | None:
        """Read the rest of the stream on `loop`, calling `on_chunk` there for each chunk.

        No thread waits for the relay meanwhile: the loop's selector says when bytes are
        there (see `LoopReader`). The future ends at [DONE], or with the error that ended the
        stream (an exception from `on_chunk` included). None when this response can only be
        read by blocking (not an event stream, or compressed): use `read()` then.
        """
        response = self._response
        if not (self.streaming and is_event_stream(response) and is_uncompressed(response)):
            return None
        body = _body_framing(response)
        if body is None or self._sock is None:
            return None
        done: concurrent.futures.Future = concurrent.futures.Future()
        reader = LoopReader(self, loop, on_chunk, body, done)
        loop.call_soon_threadsafe(reader.start)
        return done

    def close(self) -> None:
        """Hang up now, whatever went wrong: a relay still writing is still generating (and
        billing); a traceback would otherwise keep the socket open."""
        response, self._response = self._response, None
        if response is not None:
            response.close()
        session, self._session = self._session, None
        if session is not None:
            session.close()

    # -- opening, with retries before any output

    def _open(self, session: requests.Session) -> requests.Response:
        attempt = 0
        while True:
            response = self._post(session)
            if 200 <= response.status_code < 300:
                return response
            body = self._read_all(response, limit=64 * 1024)
            error = status_error(response.status_code, body, response.headers, self.api_key)
            response.close()
            wait = self._retry_wait(error, attempt)
            if wait is None:
                if attempt:
                    error.message += f" (gave up after {attempt + 1} attempts)"
                    error.args = (error.message,)
                raise error
            attempt += 1
            self.retries = attempt
            log.info("rate-limited by %s; retrying in %.1f s", urlsplit(self.url).netloc, wait)
            if (self.cancel.wait if self.sleep is None else self.sleep)(wait):
                raise Cancelled("Stopped.")

    def _retry_wait(self, error: UpstreamError, attempt: int) -> float | None:
        """Seconds to wait before retrying after `error`; None to raise it instead.

        Only a 429 is retried (this is before any output): after its Retry-After, else
        after an exponential backoff, plus up to 10% jitter. A Retry-After longer than
        `max_retry_wait`, or than the answer's time left, is not retried early: the
        error, which says when to try again, is raised at once. So is a backoff that
        would end past the total deadline.
        """
        if not isinstance(error, RateLimited) or attempt >= self.max_retries:
            return None
        left = self.deadlines.total - (time.monotonic() - self.started_at)
        jitter = 1 + random.uniform(0, 0.1)
        asked = error.retry_after
        if asked is None:
            wait = min(2**attempt, self.max_retry_wait) * jitter
            return wait if wait < left else None
        if asked > self.max_retry_wait or asked >= left:
            return None
        return asked * jitter if asked * jitter < left else asked

    def _post(self, session: requests.Session) -> requests.Response:
        if self.cancel.cancelled:
            raise Cancelled("Stopped before the request was sent.")
        elapsed = time.monotonic() - self.started_at
        first_byte = max(0.001, min(self.deadlines.first_byte, self.deadlines.total - elapsed))
        try:
            response = session.post(
                self.url,
                data=wire_json(self.body).encode(),
                headers=self.headers,
                stream=True,
                allow_redirects=False,
                timeout=(self.deadlines.connect, first_byte),
            )
        except requests.exceptions.ConnectTimeout:
            self._raise_if_cancelled()
            raise UpstreamTimeout(
                f"Could not connect to the relay within {self.deadlines.connect:g} s."
            ) from None
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError):
            self._raise_if_cancelled()
            raise UpstreamTimeout(f"The relay sent no response within {first_byte:g} s.") from None
        except requests.exceptions.RequestException as exc:
            self._raise_if_cancelled()
            raise connect_error(exc, self.url) from None
        self.first_byte_at = time.monotonic()
        self.status = response.status_code
        self.response_headers = {name: scrub(value, self.api_key) for name, value in response.headers.items()}
        self._last_data_at = self.first_byte_at
        self._sock = _socket_of(response)
        return response

    def _raise_if_cancelled(self) -> None:
        if self.cancel.cancelled:
            raise Cancelled("Stopped.")

    # -- reading

    def _pieces(self, response: requests.Response) -> Iterator[bytes]:
        """Bytes as they arrive: read1 returns what one recv gave, chunked or not.

        Relays are asked for an uncompressed body: then read from http.client's response
        under urllib3's: the same bytes for about 15% less CPU per chunk (118 -> 100 µs
        reading one stream, median of 4 runs each). A relay that compresses anyway is read
        through urllib3, which decodes (it was read undecoded before, and failed).
        """
        if is_uncompressed(response):
            read = (getattr(response.raw, "_fp", None) or response.raw).read1
        else:
            read = functools.partial(response.raw.read1, decode_content=True)
        timeout = None
        while True:
            left = self._time_left()
            # Setting a socket timeout is a system call (and a trip through the GIL): skip it
            # while the one set is close enough, so a steady stream makes none. Close
            # enough: at most 5% (and 50 ms) early, or 10% (and 0.5 s) late.
            if self._sock is not None and (
                timeout is None or not timeout - min(0.5, left / 10) <= left <= timeout + min(0.05, left / 20)
            ):
                timeout = left
                self._sock.settimeout(timeout)
            try:
                piece = read(READ_SIZE)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                self._raise_if_cancelled()
                self._time_left()
                raise UpstreamTimeout(f"The relay sent nothing for {self.deadlines.idle:g} s.") from None
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
                self._raise_if_cancelled()
                raise IncompleteStream(
                    f"The connection to the relay broke mid-answer ({type(exc).__name__})."
                ) from None
            if not piece:
                self._raise_if_cancelled()
                self._eof = True
                return
            yield piece

    def _time_left(self) -> float:
        """Seconds before the nearer of the idle and total deadlines; raises once one passed."""
        now = time.monotonic()
        total_left = self.deadlines.total - (now - self.started_at)
        if total_left <= 0:
            raise UpstreamTimeout(f"The answer took longer than the {self.deadlines.total:g} s limit.")
        # Only events move _last_data_at: keep-alive comments do not hold this off.
        idle_left = self.deadlines.idle - (now - self._last_data_at)
        if idle_left <= 0:
            raise UpstreamTimeout(f"The relay sent nothing for {self.deadlines.idle:g} s.")
        return min(total_left, idle_left)

    def _read_all(self, response: requests.Response, limit: int = 32 * 1024 * 1024) -> bytes:
        chunks = []
        size = 0
        for piece in self._pieces(response):
            self._last_data_at = time.monotonic()
            chunks.append(piece)
            size += len(piece)
            if size > limit:
                break
        return b"".join(chunks)

    def _valid_pieces(self, response: requests.Response) -> Iterator[bytes]:
        """`_pieces`, made valid UTF-8 (see `_Utf8Repair`)."""
        for piece in self._pieces(response):
            if valid := self.utf8.feed(piece):
                yield valid
        if tail := self.utf8.feed(b"", final=True):
            yield tail

    def _events(self, response: requests.Response) -> Iterator[dict]:
        for event in _SSEClient(self._valid_pieces(response)).events():
            try:
                chunk = self._chunk(event.event, event.data)
            except ProtocolError:
                if self._eof:  # sseclient hands over the unterminated tail at EOF: a cut
                    break
                raise
            if chunk is None:
                response.close()
                return
            yield chunk
        response.close()
        self._incomplete()

    def _chunk(self, event: str, data: str) -> dict | None:
        """One event's chunk; None at [DONE]. Raises for an error in the stream."""
        self._last_data_at = time.monotonic()
        self._raise_if_cancelled()
        data = scrub(data, self.api_key)
        self._record(event, data)
        if data.strip() == "[DONE]":
            return None
        chunk = self._decode(data)
        if event == "error" or chunk.get("error"):
            raise StreamErrorEvent(
                "The relay reported an error mid-answer: " + relay_error_text(data.encode(), self.api_key)
            )
        return chunk

    def _incomplete(self) -> None:
        """The body ended without [DONE]: stopped, or cut off."""
        self._raise_if_cancelled()
        raise IncompleteStream(
            "The stream ended before the relay said it was done (no [DONE]); the answer may be cut off."
        )

    def _decode(self, data: str) -> dict:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProtocolError(
                "The relay sent an event that is not valid JSON: " + scrub(data[:120], self.api_key)
            ) from None
        if not isinstance(chunk, dict):
            raise ProtocolError("The relay sent an event that is not a JSON object.")
        return chunk

    def _record(self, event: str, data: str) -> None:
        """Keep the raw frames for the inspector, with their arrival time, up to a cap."""
        self.frames_bytes += len(data)
        if len(self.frames) >= MAX_FRAMES or self.frames_bytes > MAX_FRAME_BYTES:
            self.frames_dropped += 1
            return
        at = round((self._last_data_at - self.started_at) * 1000, 1)
        self.frames.append([at, data] if event == "message" else [at, data, event])

    def _single(self, response: requests.Response, content_type: str) -> dict:
        text = scrub(self.utf8.feed(self._read_all(response), final=True).decode(), self.api_key)
        body = text.encode()
        self._record("message", text)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not (data.get("choices") or data.get("error")):
            asked = "a stream" if self.streaming else "a JSON answer"
            kind = content_type.split(";")[0] or "no content type"
            snippet = " ".join(scrub(text[:120], self.api_key).split())
            raise ProtocolError(
                f"Asked for {asked} but the relay answered with {kind}: {snippet!r}. Check the base URL."
            )
        if data.get("error"):
            raise StreamErrorEvent("The relay reported an error: " + relay_error_text(body, self.api_key))
        return completion_as_chunk(data)


def _socket_of(response: requests.Response) -> socket.socket | None:
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:  # urllib3 lets go of a connection that closes after this response
        buffer = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(buffer, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


# ---------------------------------------------------------------------------- reading on an event loop


class LoopReader:
    """Reads one opened stream on an event loop, without a thread waiting for it.

    With a thread per stream blocked in recv(), every chunk woke a thread that then
    queued for the GIL behind the others: at 50 streams × 50 chunks/s, 4.6 context
    switches per chunk, and Daphne spent 714–795 µs of CPU per chunk. Here the loop's
    selector says which sockets have bytes; each is read once, non-blocking, and its
    whole events parsed at once: 601–632 µs per chunk in the same runs, added latency
    p50 108 ms instead of 157 (benchmarks/relay.py, 3 interleaved runs each).

    requests has already sent the request and read the response's head; the body's
    framing (chunked, Content-Length or close-delimited) is undone by `_body_framing`,
    then events are cut at their blank lines and parsed by sseclient-py, as in `read()`.
    Deadlines are loop timers. Stop shuts the socket down, which wakes the loop; a
    stopped stream ends as `Cancelled`, whatever the socket returned meanwhile.
    """

    def __init__(
        self,
        stream: ChatStream,
        loop: asyncio.AbstractEventLoop,
        on_chunk: Callable[[dict], None],
        body: _Framing,
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
        self.events = _EventCutter()
        self.timer: asyncio.TimerHandle | None = None
        self.watching = False
        self.ended = False  # `done` is resolved (a plain flag: Future.done() takes a lock)

    def start(self) -> None:
        try:
            self.sock.setblocking(False)
            head_bytes = _buffered(self.stream._response)  # what came in with the head
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


def _buffered(response: requests.Response) -> bytes:
    """Body bytes http.client read along with the head (its socket is non-blocking now)."""
    buffer = response.raw._fp.fp
    try:
        ready = buffer.peek()  # what it holds; b"" when empty and nothing is readable yet
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):  # the same, over TLS
        return b""
    return buffer.read1(len(ready)) if ready else b""


class _Framing:
    """Undoes an HTTP/1.1 body's framing as bytes arrive; `ended` once the body is whole.

    Broken framing sets `broken`, after returning the bytes decoded before it, so the
    events they hold are still relayed.
    """

    ended = False
    broken = False

    def feed(self, data: bytes) -> bytes:
        return data


_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _Chunked(_Framing):
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


class _Length(_Framing):
    def __init__(self, length: int) -> None:
        self.left = length
        self.ended = length == 0

    def feed(self, data: bytes) -> bytes:
        data = data[: self.left]
        self.left -= len(data)
        self.ended = self.left == 0
        return data


def _body_framing(response: requests.Response) -> _Framing | None:
    """How to undo this body's framing on a loop; None when only `read()` can read it."""
    head = getattr(response.raw, "_fp", None)
    if not isinstance(head, http.client.HTTPResponse) or head.fp is None:
        return None
    if head.chunked:
        return _Chunked()
    if head.length is not None:
        return _Length(head.length)
    return _Framing()  # close-delimited


class _Utf8Repair:
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


class _SSEClient(sseclient.SSEClient):
    """sseclient-py's parser, without looking its logger up for each client.

    The loop makes one per batch of whole events it reads, and `logging.getLogger`
    (a lock and a dictionary) was the largest part of making one. Parsing is
    sseclient-py's own `events()`.
    """

    _log = logging.getLogger(sseclient.__name__)

    def __init__(self, event_source, char_enc: str = "utf-8") -> None:
        self._logger = self._log
        self._event_source = event_source
        self._char_enc = char_enc


class _EventCutter:
    """Cuts bytes into whole events (at their blank line) for sseclient-py to parse.

    sseclient-py pulls from an iterator and keeps its partial event inside a generator,
    so it cannot be handed bytes as they come. The bytes after the last blank line wait
    here for the rest; whole events go to sseclient-py, which then parses them exactly
    as `read()` does. Each piece is searched once (with the 3 bytes before it, where a
    blank line may begin), so a long event costs linear time, and an event that never
    ends is refused past MAX_EVENT_BYTES.
    """

    BLANK_LINES = (b"\n\n", b"\r\r", b"\r\n\r\n")  # sseclient-py's event ends

    def __init__(self) -> None:
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
        return _SSEClient((whole,)).events()

    def rest(self) -> Iterator[sseclient.Event]:
        tail = b"".join(self.held)
        self.held, self.size, self.edge = [], 0, b""
        return _SSEClient((tail,)).events()


def list_models(base_url: str, api_key: Secret | str, extra_headers: dict | None = None) -> list[str]:
    """GET {base_url}/models; the model ids, sorted. Raises UpstreamError."""
    url = base_url.rstrip("/") + "/models"
    headers = build_headers(api_key, extra_headers, stream=False)
    headers.pop("Content-Type")
    with new_session() as session:
        try:
            response = session.get(url, headers=headers, timeout=(5, 10), allow_redirects=False)
        except requests.exceptions.Timeout:
            raise UpstreamTimeout("The relay did not list its models within 10 s.") from None
        except requests.exceptions.RequestException as exc:
            raise connect_error(exc, url) from None
        if response.status_code != 200:
            raise status_error(response.status_code, response.content, response.headers, api_key)
        try:
            data = response.json()
        except ValueError:
            raise ProtocolError("The relay's model list is not JSON.") from None
    items = data.get("data", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProtocolError('The relay\'s model list is not a list (expected {"data": [...]}).')
    return sorted({str(item["id"]) for item in items if isinstance(item, dict) and "id" in item})


# ---------------------------------------------------------------------------- accumulating


class ThinkSplitter:
    """Moves an inline `<think>…</think>` at the start of an answer into reasoning.

    Tags may arrive split across deltas, so a possible partial tag is held back
    until the next delta decides it. Only a block opening the answer counts: a
    `<think>` written later is text the model meant to show.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.inside = False
        self.started = False  # visible text has begun: no more <think> blocks
        self.closed = False  # a block has ended: drop the blank lines that follow it
        self.held = ""

    @property
    def active(self) -> bool:
        return self.inside or not self.started or bool(self.held)

    def feed(self, text: str) -> tuple[str, str]:
        """(content, reasoning) for one delta of content."""
        text, self.held = self.held + text, ""
        content, reasoning = [], []
        while text:
            if not self.inside and self.started:
                content.append(text)
                break
            if not self.inside:
                stripped = text.lstrip()
                if not stripped:  # only whitespace so far: wait for what follows
                    self.held = text
                    break
                if not stripped.startswith(self.OPEN) and not self.OPEN.startswith(stripped):
                    self.started = True
                    text = stripped if self.closed else text  # no blank lines after the block
                    continue
                text = stripped
            tag = self.CLOSE if self.inside else self.OPEN
            at = text.find(tag)
            if at >= 0:
                (reasoning if self.inside else content).append(text[:at])
                text = text[at + len(tag) :]
                self.closed = self.inside
                self.inside = not self.inside
                continue
            keep = next(
                (n for n in range(min(len(tag) - 1, len(text)), 0, -1) if tag.startswith(text[-n:])), 0
            )
            (reasoning if self.inside else content).append(text[: len(text) - keep])
            self.held = text[len(text) - keep :]
            break
        return "".join(content), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        held, self.held = self.held, ""
        return ("", held) if self.inside else (held, "")


@dataclass
class Choice:
    index: int
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict] = field(default_factory=dict)
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    role: str = "assistant"
    think: ThinkSplitter = field(default_factory=ThinkSplitter)

    def state(self) -> dict:
        return {
            "index": self.index,
            "content": "".join(self.content),
            "reasoning": "".join(self.reasoning),
            "tool_calls": [self.tool_calls[i] for i in sorted(self.tool_calls)] or None,
            "logprobs": self.logprobs or None,
            "finish_reason": self.finish_reason,
        }


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None

    @classmethod
    def parse(cls, data: dict) -> Usage:
        completion_details = data.get("completion_tokens_details") or {}
        prompt_details = data.get("prompt_tokens_details") or {}
        cached = prompt_details.get("cached_tokens", data.get("prompt_cache_hit_tokens"))
        return cls(
            prompt_tokens=_int(data.get("prompt_tokens")),
            completion_tokens=_int(data.get("completion_tokens")),
            total_tokens=_int(data.get("total_tokens")),
            reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
            cached_tokens=_int(cached),
        )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


REASONING_FIELDS = ("reasoning_content", "reasoning")


class Accumulator:
    """Folds chunks into choices. `apply` returns the visible delta, for relaying."""

    def __init__(self) -> None:
        self.choices: dict[int, Choice] = {}
        self.usage: Usage | None = None
        self.model: str | None = None
        # Where this relay puts reasoning: a delta field, or "think" for inline <think> blocks.
        self.reasoning_field: str | None = None

    def apply(self, chunk: dict) -> list[dict]:
        if chunk.get("usage"):
            self.usage = Usage.parse(chunk["usage"])
        if self.model is None and chunk.get("model"):
            self.model = chunk["model"]
        deltas = []
        for raw in chunk.get("choices") or ():
            delta = self._apply_choice(raw)
            if delta:
                deltas.append(delta)
        return deltas

    def _apply_choice(self, raw: dict) -> dict | None:
        index = raw.get("index", 0)
        choice = self.choices.get(index)
        if choice is None:
            choice = self.choices[index] = Choice(index)
        delta = raw.get("delta") or raw.get("message") or {}
        out: dict[str, Any] = {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            text, inline_thought = choice.think.feed(text) if choice.think.active else (text, "")
            self._add_text(choice, out, text, inline_thought)
            if inline_thought and self.reasoning_field is None:
                self.reasoning_field = "think"
        # Relays moving from reasoning_content to reasoning send both, with the same text.
        name = next((n for n in REASONING_FIELDS if delta.get(n)), None)
        if name and isinstance(delta[name], str):
            self._add_text(choice, out, "", delta[name])
            self.reasoning_field = self.reasoning_field or name
        if raw.get("finish_reason") and choice.think.held:
            self._add_text(choice, out, *choice.think.flush())
        if delta.get("tool_calls"):
            out["tool_calls"] = self._apply_tool_calls(choice, delta["tool_calls"])
        logprobs = (raw.get("logprobs") or {}).get("content")
        if logprobs:
            choice.logprobs.extend(logprobs)
            out["logprobs"] = logprobs
        if raw.get("finish_reason"):
            choice.finish_reason = raw["finish_reason"]
            out["finish_reason"] = raw["finish_reason"]
        if not out:
            return None
        out["index"] = index
        return out

    @staticmethod
    def _add_text(choice: Choice, out: dict, content: str, reasoning: str) -> None:
        if content:
            choice.content.append(content)
            out["content"] = out.get("content", "") + content
        if reasoning:
            choice.reasoning.append(reasoning)
            out["reasoning"] = out.get("reasoning", "") + reasoning

    @staticmethod
    def _apply_tool_calls(choice: Choice, fragments: list[dict]) -> list[dict]:
        for position, fragment in enumerate(fragments):
            index = fragment.get("index", position)
            call = choice.tool_calls.setdefault(
                index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if fragment.get("id"):
                call["id"] = fragment["id"]
            if fragment.get("type"):
                call["type"] = fragment["type"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            arguments = function.get("arguments")
            if isinstance(arguments, dict):  # some relays send parsed arguments
                arguments = json.dumps(arguments)
            call["function"]["arguments"] += arguments or ""
        return fragments

    def state(self) -> list[dict]:
        return [self.choices[i].state() for i in sorted(self.choices)]

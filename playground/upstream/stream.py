"""One chat completion request to a relay, and its answer read as chunks.

`ChatStream` sends one `POST {base_url}/chat/completions` and yields each
`chat.completion.chunk` as soon as its bytes arrive, whether the relay streams
(SSE, chunked or close-delimited) or answers with one JSON body (reshaped as one
chunk). It keeps its own connect, first byte, idle and total deadlines; Stop
(`CancelToken.cancel`) shuts its socket down from any thread; failures raise
`UpstreamError` subclasses from which the key is scrubbed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import http.client
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import sseclient
import urllib3

from playground.keys import Secret
from playground.upstream import loop_reader
from playground.upstream.errors import (
    Cancelled,
    IncompleteStream,
    ProtocolError,
    RateLimited,
    StreamErrorEvent,
    UpstreamError,
    UpstreamTimeout,
    connect_error,
    relay_error_text,
    status_error,
)
from playground.upstream.http import (
    CancelToken,
    Deadlines,
    build_headers,
    chat_url,
    current,
    is_event_stream,
    is_uncompressed,
    new_session,
    wire_json,
)
from playground.upstream.redact import scrub
from playground.upstream.sse import Utf8Repair

log = logging.getLogger(__name__)

READ_SIZE = loop_reader.READ_SIZE
MAX_FRAMES = 5000  # raw frames kept per run for the inspector
MAX_FRAME_BYTES = 2_000_000


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
        self.utf8 = Utf8Repair()
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
        current.token, current.own_ok = self.cancel, self.demo
        try:
            self._response = self._open(self._session)
        except BaseException:
            self.close()
            raise
        finally:
            current.token, current.own_ok = None, False

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

        No thread waits for the relay meanwhile (see `loop_reader.LoopReader`). The future
        ends at [DONE], or with the error that ended the stream (an exception from
        `on_chunk` included). None when the loop reader is off
        (PLAYGROUND_FAST_PATHS) or this response can only be read by blocking (not an
        event stream, or compressed): use `read()` then.
        """
        response = self._response
        if not (self.streaming and is_event_stream(response) and is_uncompressed(response)):
            return None
        if self._sock is None or not loop_reader.enabled():
            return None
        return loop_reader.start(self, loop, on_chunk)

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
        self._sock = self.cancel.sock
        return response

    def _raise_if_cancelled(self) -> None:
        if self.cancel.cancelled:
            raise Cancelled("Stopped.")

    # -- reading

    def _pieces(self, response: requests.Response) -> Iterator[bytes]:
        """Bytes as they arrive: read1 returns what one recv gave, chunked or not.

        Relays are asked for an uncompressed body; one that compresses anyway is
        decoded by urllib3. With the loop reader on, an uncompressed body is read from
        http.client's response under urllib3's (`loop_reader.raw_read1`).
        """
        if is_uncompressed(response) and loop_reader.enabled():
            read = loop_reader.raw_read1(response)
        else:
            read = functools.partial(response.raw.read1, decode_content=True)
        timeout = None
        while True:
            left = self._time_left()
            # The socket's timeout is set again only when the one set is no longer close
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
        for event in sseclient.SSEClient(self._valid_pieces(response)).events():
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

"""The only package that speaks HTTP to relays (requests + sseclient-py).

- `errors`: the `UpstreamError` family, with messages fit to show and free of the key.
- `redact`: the key kept out of headers, bodies and frames.
- `http`: sessions, connections guarded by playground.netguard, headers, deadlines, Stop.
- `sse`: bytes into events (UTF-8 repair, HTTP body framing, cutting at blank lines).
- `stream`: `ChatStream`, one chat completion request and its chunks.
- `loop_reader`: reading a stream on the server's event loop (a fast path).
- `accumulate`: chunks folded into choices and usage (`Accumulator`).
- `listing`: a relay's model list.

The names below are the package's public interface; new code may import them from
their module.
"""

from playground.upstream.accumulate import REASONING_FIELDS, Accumulator, Choice, ThinkSplitter, Usage
from playground.upstream.errors import (
    AddressRefused,
    AuthError,
    Cancelled,
    ConnectError,
    HTTPStatusError,
    IncompleteStream,
    ProtocolError,
    RateLimited,
    ServerError,
    StreamErrorEvent,
    UpstreamError,
    UpstreamTimeout,
    connect_error,
    parse_retry_after,
    relay_error_text,
    status_error,
    wait_text,
)
from playground.upstream.http import (
    CancelToken,
    Deadlines,
    build_headers,
    chat_url,
    new_session,
    wire_json,
)
from playground.upstream.listing import list_models
from playground.upstream.redact import masked_headers, scrub
from playground.upstream.sse import Utf8Repair
from playground.upstream.stream import ChatStream, completion_as_chunk

__all__ = [
    "REASONING_FIELDS",
    "Accumulator",
    "AddressRefused",
    "AuthError",
    "CancelToken",
    "Cancelled",
    "ChatStream",
    "Choice",
    "ConnectError",
    "Deadlines",
    "HTTPStatusError",
    "IncompleteStream",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "StreamErrorEvent",
    "ThinkSplitter",
    "UpstreamError",
    "UpstreamTimeout",
    "Usage",
    "Utf8Repair",
    "build_headers",
    "chat_url",
    "completion_as_chunk",
    "connect_error",
    "list_models",
    "masked_headers",
    "new_session",
    "parse_retry_after",
    "relay_error_text",
    "scrub",
    "status_error",
    "wait_text",
    "wire_json",
]

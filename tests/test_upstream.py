"""playground.upstream against a real local relay (tests/fakes.py), byte for byte.

Every test talks HTTP to a FakeRelay on 127.0.0.1; nothing in upstream is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from playground.upstream import (
    Accumulator,
    AuthError,
    Cancelled,
    CancelToken,
    ChatStream,
    ConnectError,
    Deadlines,
    HTTPStatusError,
    IncompleteStream,
    ProtocolError,
    RateLimited,
    ServerError,
    StreamErrorEvent,
    UpstreamError,
    UpstreamTimeout,
    Usage,
    Utf8Repair,
    list_models,
    loop_reader,
    parse_retry_after,
    wait_text,
)
from tests.fakes import (
    FakeRelay,
    Handler,
    chunk,
    frames,
    hang,
    respond,
    slow_stream,
    sse,
    tls_context,
    trickle,
    usage_chunk,
)

KEY = "sk-canary-7f3a9c2e5b1d4e6f8a0b"
BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
# Generous enough never to fire by accident, short enough that a bug fails instead of hanging.
SAFE = Deadlines(connect=5, first_byte=5, idle=5, total=10)
MODES = ["chunked", "close"]


# ---------------------------------------------------------------------------- helpers


class LoopStream(ChatStream):
    """A ChatStream whose body is read on an event loop, as the relay reads it.

    Iterating it opens the request, hands the rest to `read_on_loop` on a loop of its own,
    and yields the chunks that loop passes on; `on_loop` says whether the loop read them
    (a body that is not an event stream is read by blocking, as ChatStream does).
    """

    on_loop = False

    def __iter__(self):
        self.loop = loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        arrived: queue.SimpleQueue = queue.SimpleQueue()
        reading = None
        try:
            self.open()
            reading = self.read_on_loop(loop, arrived.put)
            if reading is None:
                yield from self.read()
                return
            self.on_loop = True
            reading.add_done_callback(lambda _: arrived.put(None))
            while (item := arrived.get()) is not None:
                yield item
            reading.result()
        finally:
            if reading is not None and not reading.done():  # the caller stopped reading
                self.cancel.cancel()
                reading.exception(timeout=5)
            self.close()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


READERS = {"thread": ChatStream, "loop": LoopStream}


def open_stream(relay: FakeRelay, body: dict = BODY, **kwargs) -> ChatStream:
    kwargs.setdefault("deadlines", SAFE)
    return READERS[relay.reader](relay.base_url, KEY, body, **kwargs)


def run(relay: FakeRelay, *handlers, **kwargs) -> list[dict]:
    relay.script(*handlers)
    return list(open_stream(relay, **kwargs))


def failure(relay: FakeRelay, *handlers, **kwargs) -> UpstreamError:
    relay.script(*handlers)
    with pytest.raises(UpstreamError) as info:
        list(open_stream(relay, **kwargs))
    return info.value


def run_until_failure(relay: FakeRelay, *handlers, **kwargs) -> tuple[list[dict], UpstreamError]:
    """The chunks yielded before the stream raised, and what it raised."""
    relay.script(*handlers)
    received = []
    try:
        for item in open_stream(relay, **kwargs):
            received.append(item)
    except UpstreamError as error:
        return received, error
    pytest.fail(f"the stream ended without an error after {received}")


def fold(chunks: list[dict]) -> Accumulator:
    acc = Accumulator()
    for item in chunks:
        acc.apply(item)
    return acc


def choice_state(content: str = "", **fields) -> dict:
    state = {
        "index": 0,
        "content": content,
        "reasoning": "",
        "tool_calls": None,
        "logprobs": None,
        "finish_reason": None,
    }
    state.update(fields)
    return state


def headers_of(received) -> dict[str, str]:
    return {name.lower(): value for name, value in received.headers.items()}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Waits:
    """A ChatStream `sleep` that keeps each wait it is asked for (`asked`) instead of sleeping."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.asked.append(seconds)
        return False


LIMITED = "The relay is rate-limiting requests (HTTP 429): Rate limit reached."


def rate_limited(retry_after: str) -> Handler:
    return respond(429, {"error": {"message": "Rate limit reached."}}, {"Retry-After": retry_after})


class Consumer(threading.Thread):
    """Iterates a stream on its own thread, as the relay does, keeping what arrived."""

    def __init__(self, stream: ChatStream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.received: list[dict] = []
        self.error: UpstreamError | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            for item in self.stream:
                self.received.append(item)
        except UpstreamError as error:
            self.error = error
        self.ended_at = time.monotonic()

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"only {len(self.received)} chunks arrived"
            time.sleep(0.01)


def close_soon(fake: FakeRelay) -> None:
    # close() waits out serve_forever's 0.5 s poll; no test needs to wait for it.
    threading.Thread(target=fake.close, daemon=True).start()


@contextlib.contextmanager
def serving(reader: str, tls: ssl.SSLContext | None = None) -> Iterator[FakeRelay]:
    """A local relay whose streams the tests read with `reader` ("thread" or "loop"); a
    test reading on the loop is skipped when the loop reader is off (PLAYGROUND_FAST_PATHS):
    every body is then read as "thread" reads it."""
    if reader == "loop" and not loop_reader.enabled():
        pytest.skip("the loop reader is off (PLAYGROUND_FAST_PATHS)")
    fake = FakeRelay(tls=tls)
    fake.reader = reader
    try:
        yield fake
    finally:
        close_soon(fake)


def trusted_tls(tmp_path, settings) -> ssl.SSLContext:
    """A new certificate for a relay, trusted through PLAYGROUND_CA_BUNDLE."""
    context = tls_context(tmp_path)
    settings.UPSTREAM_CA_BUNDLE = str(tmp_path / "ca.pem")
    return context


@pytest.fixture(params=READERS)
def relay(request):
    """A local relay; each test runs once reading in a thread (blocking), once on a loop."""
    with serving(request.param) as fake:
        yield fake


@pytest.fixture
def loop_relay():
    """A local relay read on a loop only: for what only the loop reader does itself."""
    with serving("loop") as fake:
        yield fake


@pytest.fixture(params=READERS)
def tls_relay(request, tmp_path, settings):
    """A local relay over HTTPS, read both ways."""
    with serving(request.param, trusted_tls(tmp_path, settings)) as fake:
        yield fake


# ---------------------------------------------------------------------------- chunk shapes


def test_it_yields_each_chunk_as_the_relay_sent_it(relay):
    events = [chunk("", role="assistant"), chunk("Hello"), chunk(" world"), chunk(finish="stop")]

    assert run(relay, sse(events)) == events


def test_it_accumulates_content(relay):
    events = [chunk("", role="assistant"), chunk("Hello"), chunk(" world"), chunk(finish="stop")]

    acc = fold(run(relay, sse(events)))

    assert acc.state() == [choice_state("Hello world", finish_reason="stop")]


def test_it_puts_reasoning_content_in_reasoning(relay):
    events = [chunk(reasoning="Let me "), chunk(reasoning="think."), chunk("Four.")]

    acc = fold(run(relay, sse(events)))

    assert acc.state() == [choice_state("Four.", reasoning="Let me think.")]
    assert acc.reasoning_field == "reasoning_content"


def test_it_puts_the_reasoning_field_in_reasoning(relay):
    events = [
        chunk(reasoning="Let me ", reasoning_field="reasoning"),
        chunk(reasoning="think.", reasoning_field="reasoning"),
        chunk("Four."),
    ]

    acc = fold(run(relay, sse(events)))

    assert acc.state() == [choice_state("Four.", reasoning="Let me think.")]
    assert acc.reasoning_field == "reasoning"


def test_it_counts_reasoning_once_when_a_delta_carries_both_fields(relay):
    both = chunk(reasoning="Hmm.")
    both["choices"][0]["delta"]["reasoning"] = "Hmm."

    acc = fold(run(relay, sse([both])))

    assert acc.state() == [choice_state(reasoning="Hmm.")]


def test_it_assembles_a_tool_call_from_fragments(relay):
    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    events = [
        chunk(role="assistant", tool_calls=[first]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '": "Par'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": 'is"}'}}]),
        chunk(finish="tool_calls"),
    ]

    acc = fold(run(relay, sse(events)))

    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert acc.state() == [choice_state(tool_calls=[call], finish_reason="tool_calls")]


def test_it_assembles_parallel_tool_calls_by_index(relay):
    def opening(index: int, call_id: str, name: str) -> dict:
        function = {"name": name, "arguments": ""}
        return {"index": index, "id": call_id, "type": "function", "function": function}

    def more(index: int, arguments: str) -> dict:
        return {"index": index, "function": {"arguments": arguments}}

    events = [
        chunk(role="assistant", tool_calls=[opening(0, "call_a", "get_weather")]),
        chunk(tool_calls=[more(0, '{"city": ')]),
        chunk(tool_calls=[opening(1, "call_b", "get_time")]),
        chunk(tool_calls=[more(1, '{"tz": "CET"}')]),
        chunk(tool_calls=[more(0, '"Oslo"}')]),
        chunk(finish="tool_calls"),
    ]

    acc = fold(run(relay, sse(events)))

    assert acc.state()[0]["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
        },
    ]


def test_it_keeps_interleaved_choices_apart_by_index(relay):
    events = [
        chunk("", role="assistant", index=0),
        chunk("", role="assistant", index=1),
        chunk("Green", index=1),
        chunk("Red", index=0),
        chunk(" apple", index=0),
        chunk(" pear", index=1),
    ]

    acc = fold(run(relay, sse(events)))

    assert acc.state() == [choice_state("Red apple"), choice_state("Green pear", index=1)]


def test_it_records_the_finish_reason_of_each_choice(relay):
    last = chunk(finish="stop", index=0)
    last["choices"].append({"index": 1, "delta": {}, "finish_reason": "length"})
    events = [chunk("A", index=0), chunk("B", index=1), last]

    acc = fold(run(relay, sse(events)))

    assert [c["finish_reason"] for c in acc.state()] == ["stop", "length"]


def test_it_collects_logprobs(relay):
    first = {"token": "Hi", "logprob": -0.01, "bytes": [72, 105], "top_logprobs": []}
    second = {"token": "!", "logprob": -1.5, "bytes": [33], "top_logprobs": []}
    events = [chunk("Hi", logprobs=[first]), chunk("!", logprobs=[second])]

    acc = fold(run(relay, sse(events)))

    assert acc.state() == [choice_state("Hi!", logprobs=[first, second])]


def test_it_reads_usage_from_the_final_chunk_without_choices(relay):
    events = [
        chunk("Hi"),
        chunk(finish="stop"),
        usage_chunk(
            12,
            30,
            completion_tokens_details={"reasoning_tokens": 20},
            prompt_tokens_details={"cached_tokens": 8},
        ),
    ]

    acc = fold(run(relay, sse(events)))

    assert acc.usage == Usage(
        prompt_tokens=12,
        completion_tokens=30,
        total_tokens=42,
        reasoning_tokens=20,
        cached_tokens=8,
    )


def test_it_returns_no_deltas_for_the_usage_chunk():
    assert Accumulator().apply(usage_chunk(12, 30)) == []


def test_it_returns_the_visible_delta_of_each_choice():
    acc = Accumulator()
    acc.apply(chunk("", role="assistant"))

    assert acc.apply(chunk("Hi", finish="stop")) == [{"content": "Hi", "finish_reason": "stop", "index": 0}]


def test_it_ignores_keep_alive_comments(relay):
    events = [": ping", chunk("Hel"), ": ping", ": OPENROUTER PROCESSING", chunk("lo")]

    assert run(relay, sse(events)) == [chunk("Hel"), chunk("lo")]


def test_it_ends_the_stream_at_done(relay):
    body = frames([chunk("Hi")]) + frames([chunk("after the end")], done=False)

    assert run(relay, sse(body)) == [chunk("Hi")]


# Issue 15 §4: "a" then \xff and \xfe (2 invalid bytes), "b ", \xe2\x9c cut short by "x" (1),
# then a whole "✓" that the relay's writes split after its first two bytes.
INVALID_UTF8 = (
    b'{"choices":[{"index":0,"delta":{"content":"a\xff\xfeb \xe2\x9cx \xe2\x9c\x93"},"finish_reason":null}]}'
)
INVALID_UTF8_TEXT = "a\ufffd\ufffdb \ufffdx ✓"


@pytest.mark.parametrize("mode", MODES)
def test_issue15_4_invalid_utf8_from_the_relay_is_replaced_and_noted(relay, mode):
    body = b"data: " + INVALID_UTF8 + b"\n\n" + frames([chunk(finish="stop")])
    split = body.index(b"\xe2\x9c\x93") + 2
    relay.script(sse(body, pieces=[split], mode=mode, delay=0.05))
    stream = open_stream(relay)

    chunks = list(stream)

    assert [c["choices"][0]["delta"].get("content") for c in chunks] == [INVALID_UTF8_TEXT, None]
    assert stream.decode_errors == 3
    assert INVALID_UTF8_TEXT in stream.frames[0][1]


def test_issue15_4_invalid_utf8_in_a_json_answer_is_replaced_and_noted(relay):
    completion = INVALID_UTF8.replace(b'"delta"', b'"message"')
    relay.script(respond(200, completion))
    stream = open_stream(relay, {**BODY, "stream": False})

    chunks = list(stream)

    assert chunks[0]["choices"][0]["delta"]["content"] == INVALID_UTF8_TEXT
    assert stream.decode_errors == 3


@pytest.mark.parametrize(
    "raw",
    [b"plain", "✓ 你好 🎉".encode(), b"a\xff\xfeb", b"\xe2\x9cx", b"\xed\xa0\x80", b"\xc0\xaf"]
    + [b"cut at the end \xf0\x9f\x8e"],
)
def test_issue15_4_utf8_repair_matches_decode_with_replace_however_the_bytes_are_cut(raw):
    expected = raw.decode("utf-8", "replace")
    for size in (1, 2, 3, len(raw)):
        repair = Utf8Repair()
        out = b"".join(repair.feed(raw[i : i + size]) for i in range(0, len(raw), size))
        out += repair.feed(b"", final=True)
        assert out.decode() == expected
        assert repair.replaced == expected.count("\ufffd")


def test_it_reshapes_a_json_completion_as_one_chunk(relay):
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }

    chunks = run(relay, respond(200, completion), body={**BODY, "stream": False})

    assert chunks == [
        {
            "id": "chatcmpl-1",
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "Hello"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
        }
    ]


def test_it_folds_a_json_completion_into_the_same_state_as_the_stream(relay):
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {
        "role": "assistant",
        "content": "Sure.",
        "reasoning_content": "Easy.",
        "tool_calls": [call],
    }
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    events = [
        chunk(reasoning="Easy.", role="assistant"),
        chunk("Sure."),
        chunk(tool_calls=[{"index": 0, **call}]),
        chunk(finish="tool_calls"),
        usage_chunk(7, 3),
    ]
    streamed = fold(run(relay, sse(events)))

    answered = fold(run(relay, respond(200, completion), body={**BODY, "stream": False}))

    assert (answered.state(), answered.usage) == (streamed.state(), streamed.usage)


def test_it_accepts_a_json_answer_to_a_streaming_request(relay):
    message = {"role": "assistant", "content": "Hello"}
    completion = {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}

    acc = fold(run(relay, respond(200, completion)))

    assert acc.state() == [choice_state("Hello")]


# ---------------------------------------------------------------------------- byte splits

SPLIT_LOGPROB = {
    "token": " à",
    "logprob": -0.31,
    "bytes": [32, 195, 160],
    "top_logprobs": [{"token": " a", "logprob": -1.4, "bytes": [32, 97]}],
}

# Every chunk shape the relays send, as OpenAI's chat.completion.chunk: two choices (n=2)
# by index, reasoning, a tool call's arguments in two fragments and a second call by
# index, logprobs, finish reasons, a keep-alive and the usage chunk; multi-byte UTF-8 in
# text, arguments and a logprobs token.
SPLIT_EVENTS = [
    chunk(reasoning="想想", role="assistant"),
    ": ping",
    {"choices": [{"index": 0, "delta": {"content": "你好"}, "finish_reason": None}]},
    {"choices": [{"index": 1, "delta": {"role": "assistant", "content": " café"}}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "find", "arguments": '{"q": '},
                        }
                    ]
                },
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"é"}'}}]}}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "now", "arguments": "{}"},
                        }
                    ]
                },
            }
        ]
    },
    {
        "choices": [
            {
                "index": 1,
                "delta": {"content": " à"},
                "logprobs": {"content": [SPLIT_LOGPROB]},
                "finish_reason": None,
            }
        ]
    },
    {
        "choices": [
            {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
            {"index": 1, "delta": {}, "finish_reason": "stop"},
        ]
    },
    usage_chunk(3, 9),
]
SPLIT_STRIDE = 32


def test_the_split_body_holds_every_chunk_shape():
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "find", "arguments": '{"q": "é"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]

    acc = fold([event for event in SPLIT_EVENTS if isinstance(event, dict)])

    assert acc.state() == [
        choice_state("你好", reasoning="想想", tool_calls=calls, finish_reason="tool_calls"),
        choice_state(" café à", index=1, logprobs=[SPLIT_LOGPROB], finish_reason="stop"),
    ]
    assert acc.usage == Usage(prompt_tokens=3, completion_tokens=9, total_tokens=12)


def parse_split(relay: FakeRelay, body: bytes, first: int, mode: str) -> list[dict] | str:
    """What reading `body` gives when it arrives cut at `first`, `first` + SPLIT_STRIDE, ..."""
    # The short pause after each piece makes the client read it on its own.
    cuts = list(range(first, len(body), SPLIT_STRIDE))
    relay.script(sse(body, pieces=cuts, mode=mode, delay=0.0005))
    try:
        return list(open_stream(relay))
    except UpstreamError as error:
        return repr(error)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("mode", MODES)
def test_it_parses_a_body_split_at_every_byte_offset(relay, mode, newline):
    body = frames(SPLIT_EVENTS, newline=newline)
    assert "你好".encode() in body
    assert (newline * 2).encode() in body
    expected = [event for event in SPLIT_EVENTS if isinstance(event, dict)]

    # Each request cuts the body every SPLIT_STRIDE bytes, from its own first offset: between
    # them every offset is cut (a request per offset took 3 s per reader, mode and newline).
    results = {first: parse_split(relay, body, first, mode) for first in range(1, SPLIT_STRIDE + 1)}

    assert {first: result for first, result in results.items() if result != expected} == {}


def chunked_raw(body: bytes, sizes: list[int]) -> bytes:
    """`body` in HTTP chunks of the given sizes (the rest in one), with a chunk extension."""
    out, at = b"", 0
    for size in [*sizes, len(body)]:
        part, at = body[at : at + size], at + size
        if part:
            out += f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def test_it_undoes_chunked_framing_cut_at_every_byte_offset(relay):
    body = frames([chunk("Hé"), chunk("llo", finish="stop")])
    raw = chunked_raw(body, [7, 1, 30])
    results = {}
    for at in range(1, len(raw)):

        def cut(h, at=at) -> None:
            # The framing is written by hand, so the cut can fall inside a size line too.
            h.start(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"}, mode="raw")
            h.write(raw[:at])
            time.sleep(0.001)
            h.write(raw[at:])

        relay.script(cut)
        try:
            results[at] = list(open_stream(relay))
        except UpstreamError as error:
            results[at] = repr(error)

    expected = [chunk("Hé"), chunk("llo", finish="stop")]
    assert {at: result for at, result in results.items() if result != expected} == {}


@pytest.mark.parametrize("size", [b"-1", b"-3", b"0x5", b"+5", b"5_"])
def test_the_loop_refuses_a_chunk_size_that_is_not_hex_digits(loop_relay, size):
    """Read on the loop, the framing is ours (read() leaves it to http.client, and its
    idle deadline): a size int() would take must end the stream, not spin the loop."""

    def bad_size(h) -> None:
        h.start(200, {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"}, mode="raw")
        first = frames([chunk("Hi")], done=False)
        h.write(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        h.write(size + b"\r\nabcdefgh\r\n")
        time.sleep(2)  # then hold the connection open: only the framing can end this

    received, error = run_until_failure(loop_relay, bad_size)

    assert received == [chunk("Hi")]  # what came before the broken framing is kept
    assert type(error) is IncompleteStream
    assert error.message == "The relay broke the chunked encoding of its answer."


def test_a_stream_stopped_over_tls_ends_stopped_whatever_the_socket_still_held(tmp_path, settings):
    with serving("loop", trusted_tls(tmp_path, settings)) as relay:
        relay.script(slow_stream(words=400, every=0.01))
        token = CancelToken()
        stream = open_stream(relay, cancel=token)
        consumer = Consumer(stream)
        consumer.start()
        consumer.wait_for(4)
        # The loop is busy while more encrypted bytes arrive; after the stop, the shut-down
        # TLS socket hands them over raw.
        stream.loop.call_soon_threadsafe(time.sleep, 0.6)
        time.sleep(0.3)
        token.cancel()
        consumer.join(5)

    assert type(consumer.error) is Cancelled


@pytest.mark.parametrize(
    ("answer", "on_loop"),
    [
        (sse([chunk("Hi")], mode="chunked"), True),
        (sse([chunk("Hi")], mode="close"), True),
        (respond(200, frames([chunk("Hi")]), {"Content-Type": "text/event-stream"}), True),
        (respond(200, {"choices": [{"index": 0, "message": {"content": "Hi"}}]}), False),
    ],
    ids=["chunked", "close-delimited", "content-length", "json"],
)
def test_the_loop_reads_every_event_stream_framing_itself(loop_relay, answer, on_loop):
    loop_relay.script(answer)
    stream = open_stream(loop_relay)

    chunks = list(stream)

    assert stream.on_loop is on_loop
    assert fold(chunks).state()[0]["content"] == "Hi"


def test_it_streams_from_a_relay_over_tls(tls_relay):
    # 120 KB in three writes: reads end inside TLS records, and TLS holds decrypted bytes
    # the selector does not announce.
    events = [chunk(f"w{i} " * 60) for i in range(300)]
    body = frames(events)
    tls_relay.script(sse(body, pieces=[len(body) // 3, 2 * len(body) // 3], delay=0.05))
    stream = open_stream(tls_relay)

    assert list(stream) == events
    assert getattr(stream, "on_loop", False) is (tls_relay.reader == "loop")


def test_it_reads_what_tls_decrypted_along_with_the_head(tls_relay):
    # Head and body in one write of one TLS record (at most 16 KB): http.client's 8 KB read
    # of the head leaves the rest decrypted inside TLS, where no selector sees it.
    events = [chunk(f"w{i} " * 60) for i in range(28)]
    body = chunked_raw(frames(events), [])
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert 8192 < len(head + body) <= 16384

    def all_at_once(h) -> None:
        h.wfile.write(head + body)
        h.wfile.flush()
        time.sleep(4)  # then nothing more: no readiness from the socket until this ends
        h.close_connection = True

    tls_relay.script(all_at_once)
    started = time.monotonic()

    assert list(open_stream(tls_relay)) == events
    assert time.monotonic() - started < 2


def test_it_stops_a_stream_over_tls_within_a_second(tls_relay):
    consumer, stopped_at = stop_mid_stream(tls_relay)

    assert type(consumer.error) is Cancelled
    assert consumer.ended_at - stopped_at < 1


def test_it_refuses_a_relay_whose_certificate_it_does_not_trust(tls_relay, settings):
    settings.UPSTREAM_CA_BUNDLE = None

    error = failure(tls_relay, sse([chunk("Hi")]))

    assert type(error) is ConnectError
    assert (
        error.message
        == f"The TLS handshake with 127.0.0.1:{tls_relay.port} failed; check the base URL's scheme."
    )


def test_it_decodes_a_stream_the_relay_compressed_although_asked_not_to(relay):
    events = [chunk("Grüße"), chunk(", world"), chunk(finish="stop")]

    def gzipped(h) -> None:
        h.start(200, {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}, mode="chunked")
        packed = gzip.compress(frames(events))
        for at in range(0, len(packed), 7):  # pieces that cut across events
            h.write(packed[at : at + 7])
        h.end()

    assert run(relay, gzipped) == events
    assert headers_of(relay.requests[-1])["accept-encoding"] == "identity"


# ---------------------------------------------------------------------------- promptness


@pytest.mark.parametrize("mode", MODES)
def test_it_relays_an_event_before_the_rest_of_the_body_arrives(relay, mode):
    relay.script(sse([chunk("first"), chunk("second")], mode=mode, delay=0.5))
    started = time.monotonic()

    arrivals = [(item, time.monotonic() - started) for item in open_stream(relay)]

    assert [item for item, _ in arrivals] == [chunk("first"), chunk("second")]
    assert arrivals[0][1] < 0.4
    assert arrivals[1][1] >= 0.45  # the pause was real: the check above could fail


@pytest.mark.parametrize("mode", MODES)
def test_it_ends_at_a_lone_done_without_waiting_for_the_connection_to_close(relay, mode):
    relay.script(sse([chunk("Hi")], mode=mode, delay=0.3, hold_open=5))
    started = time.monotonic()

    chunks = list(open_stream(relay))

    assert chunks == [chunk("Hi")]
    assert time.monotonic() - started < 1.5


# ---------------------------------------------------------------------------- HTTP errors


def test_it_raises_auth_error_on_401(relay):
    body = {"error": {"message": f"Invalid API key: {KEY}", "type": "invalid_request_error"}}

    error = failure(relay, respond(401, body))

    assert type(error) is AuthError
    assert (error.kind, error.status) == ("auth", 401)
    assert error.message == "The relay rejected the API key (HTTP 401): Invalid API key: [api key]"


def test_it_raises_auth_error_on_403(relay):
    error = failure(relay, respond(403, {"error": {"message": "This key cannot use fake-model"}}))

    assert type(error) is AuthError
    assert (error.kind, error.status) == ("auth", 403)
    assert error.message == "The relay refused access (HTTP 403): This key cannot use fake-model"


def test_it_explains_a_404(relay):
    error = failure(relay, respond(404, {"error": {"message": "model fake-x does not exist"}}))

    assert type(error) is HTTPStatusError
    assert (error.kind, error.status) == ("http_error", 404)
    assert error.message == (
        "The relay has no such endpoint or model (HTTP 404): model fake-x does not exist. "
        "Check the base URL (it usually ends in /v1) and the model name."
    )


def test_it_shows_the_relays_own_words_on_400(relay):
    said = {"message": "max_tokens must be at least 1", "type": "invalid_request_error"}

    error = failure(relay, respond(400, {"error": said}))

    assert type(error) is HTTPStatusError
    assert (error.kind, error.status) == ("http_error", 400)
    assert error.message == "The relay refused the request (HTTP 400): max_tokens must be at least 1"


@pytest.mark.parametrize("status", [500, 502])
def test_it_raises_server_error_on_5xx(relay, status):
    headers = {"Content-Type": "text/plain"}

    error = failure(relay, respond(status, "upstream connect error", headers))

    assert type(error) is ServerError
    assert (error.kind, error.status, error.retryable) == ("server_error", status, True)
    assert error.message == f"The relay failed (HTTP {status}): upstream connect error"


def test_it_does_not_retry_a_server_error(relay):
    failure(relay, respond(500, {"error": {"message": "oops"}}))

    assert len(relay.requests) == 1


def test_it_retries_a_429_until_the_relay_answers(relay):
    events = [chunk("Hi"), chunk(finish="stop")]
    stream = open_stream(relay, sleep=lambda seconds: False)
    relay.script(rate_limited("1"), rate_limited("2"), sse(events))

    assert list(stream) == events
    assert len(relay.requests) == 3
    assert stream.retries == 2


def test_it_waits_as_long_as_retry_after_asks(relay):
    waits = []
    stream = open_stream(relay, sleep=lambda seconds: waits.append(seconds) or False)
    relay.script(rate_limited("1"), rate_limited("2"), sse([chunk("Hi")]))

    list(stream)

    assert len(waits) == 2
    assert 1 <= waits[0] <= 1.1  # up to 10% jitter
    assert 2 <= waits[1] <= 2.2


def test_it_waits_and_retries_when_retry_after_is_max_retry_wait(relay):
    waits = Waits()
    stream = open_stream(relay, max_retry_wait=0.5, sleep=waits)
    relay.script(rate_limited("0.5"), sse([chunk("Hi")]))

    assert list(stream) == [chunk("Hi")]
    assert len(relay.requests) == 2
    assert len(waits.asked) == 1
    assert 0.5 <= waits.asked[0] <= 0.55


def test_it_does_not_retry_before_a_retry_after_longer_than_max_retry_wait(relay):
    waits = Waits()
    deadlines = Deadlines(connect=5, first_byte=5, idle=5, total=600)  # not what stops it

    error = failure(relay, rate_limited("60"), max_retry_wait=20, deadlines=deadlines, sleep=waits)

    assert type(error) is RateLimited
    assert (error.kind, error.status, error.retry_after) == ("rate_limited", 429, 60.0)
    assert error.message == f"{LIMITED} Try again in 60 s."
    assert waits.asked == []
    assert len(relay.requests) == 1


def test_it_does_not_retry_when_retry_after_outlasts_the_total_deadline(relay):
    waits = Waits()
    deadlines = Deadlines(connect=5, first_byte=5, idle=5, total=3)

    error = failure(relay, rate_limited("5"), max_retry_wait=20, deadlines=deadlines, sleep=waits)

    assert type(error) is RateLimited
    assert error.message == f"{LIMITED} Try again in 5 s."
    assert waits.asked == []
    assert len(relay.requests) == 1


def test_it_says_when_to_retry_after_using_up_retries_on_a_longer_retry_after(relay):
    waits = Waits()

    error = failure(relay, rate_limited("1"), rate_limited("3600"), sleep=waits)

    assert type(error) is RateLimited
    assert error.message == f"{LIMITED} Try again in 60 min. (gave up after 2 attempts)"
    assert len(waits.asked) == 1
    assert len(relay.requests) == 2


# A relay whose clock is ten years behind ours: a Retry-After date counts from its Date.
RELAY_NOW = "Wed, 21 Oct 2015 07:28:00 GMT"


def rate_limited_until(retry_after: str, date: str | None) -> Handler:
    """A 429 whose head is written by hand: the fake's own Date header would come first."""

    def handle(h) -> None:
        body = b'{"error": {"message": "Rate limit reached."}}'
        head = [
            "HTTP/1.1 429 Too Many Requests",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"Retry-After: {retry_after}",
            *([f"Date: {date}"] if date else []),
        ]
        h.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        h.wfile.flush()

    return handle


@pytest.mark.parametrize(
    "later",
    ["Wed, 21 Oct 2015 07:29:00 GMT", "Wednesday, 21-Oct-15 07:29:00 GMT", "Wed Oct 21 07:29:00 2015"],
    ids=["imf-fixdate", "rfc850", "asctime"],
)
def test_it_reads_a_retry_after_date_from_the_relays_clock(relay, later):
    waits = Waits()

    error = failure(relay, rate_limited_until(later, RELAY_NOW), sleep=waits)

    assert type(error) is RateLimited
    assert error.retry_after == 60.0
    assert error.message == f"{LIMITED} Try again in 60 s."
    assert waits.asked == []
    assert len(relay.requests) == 1


def test_it_waits_until_a_retry_after_date_then_retries(relay):
    waits = Waits()
    stream = open_stream(relay, sleep=waits)
    relay.script(rate_limited_until("Wed, 21 Oct 2015 07:28:02 GMT", RELAY_NOW), sse([chunk("Hi")]))

    assert list(stream) == [chunk("Hi")]
    assert len(relay.requests) == 2
    assert len(waits.asked) == 1
    assert 2 <= waits.asked[0] <= 2.2


def test_it_counts_a_retry_after_date_from_its_own_clock_without_a_date_header(relay):
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)

    error = failure(relay, rate_limited_until(later, None), sleep=lambda seconds: False)

    assert type(error) is RateLimited
    assert 3590 < error.retry_after <= 3600
    assert error.message == f"{LIMITED} Try again in 60 min."
    assert len(relay.requests) == 1


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("60", 60.0),
        (" 2 ", 2.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
    ],
)
def test_it_reads_retry_after_seconds(value, seconds):
    assert parse_retry_after(value) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.2, "1 s"),
        (59.5, "60 s"),
        (119, "119 s"),
        (120, "2 min"),
        (3601, "61 min"),
        (7200, "2 h"),
    ],
)
def test_it_says_a_wait_in_words_rounded_up(seconds, text):
    assert wait_text(seconds) == text


def test_it_backs_off_exponentially_without_retry_after(relay):
    waits = Waits()
    stream = open_stream(relay, sleep=waits)
    slow_down = respond(429, {"error": {"message": "Slow down"}})
    relay.script(slow_down, slow_down, sse([chunk("Hi")]))

    assert list(stream) == [chunk("Hi")]
    assert len(waits.asked) == 2
    assert 1 <= waits.asked[0] <= 1.1
    assert 2 <= waits.asked[1] <= 2.2


def test_it_does_not_back_off_past_the_total_deadline(relay):
    waits = Waits()
    deadlines = Deadlines(connect=5, first_byte=5, idle=5, total=0.5)

    error = failure(
        relay, respond(429, {"error": {"message": "Slow down"}}), deadlines=deadlines, sleep=waits
    )

    assert type(error) is RateLimited
    assert error.message == "The relay is rate-limiting requests (HTTP 429): Slow down."
    assert waits.asked == []
    assert len(relay.requests) == 1


def test_it_sleeps_before_retrying_a_429(relay):
    relay.script(rate_limited("1"), sse([chunk("Hi")]))
    started = time.monotonic()

    assert list(open_stream(relay)) == [chunk("Hi")]
    assert time.monotonic() - started >= 1


def test_it_raises_rate_limited_once_retries_are_used_up(relay):
    error = failure(relay, rate_limited("1"), rate_limited("1"), max_retries=1, sleep=lambda s: False)

    assert type(error) is RateLimited
    assert (error.kind, error.status, error.retry_after) == ("rate_limited", 429, 1.0)
    assert error.message == (
        "The relay is rate-limiting requests (HTTP 429): Rate limit reached. "
        "Try again in 1 s. (gave up after 2 attempts)"
    )
    assert str(error) == error.message
    assert len(relay.requests) == 2


def test_it_does_not_follow_a_redirect(relay):
    elsewhere = FakeRelay()
    target = elsewhere.base_url + "/chat/completions"

    error = failure(relay, respond(307, b"", {"Location": target}))

    close_soon(elsewhere)
    assert elsewhere.requests == []
    assert type(error) is HTTPStatusError
    assert error.status == 307
    assert error.message == (
        f"The relay redirected (HTTP 307) to {target}; save that address as the provider's base URL."
    )


# ---------------------------------------------------------------------------- other failures


def test_it_raises_connect_error_when_nothing_listens(relay):
    port = closed_port()
    stream = ChatStream(f"http://127.0.0.1:{port}/v1", KEY, BODY, deadlines=SAFE)

    with pytest.raises(ConnectError) as info:
        list(stream)

    assert info.value.kind == "connect"
    assert info.value.message == f"Could not connect to 127.0.0.1:{port}: connection refused."


def test_it_raises_connect_error_when_the_host_name_does_not_resolve():
    # .invalid never resolves (RFC 6761); the port shows the whole address is named.
    stream = ChatStream("http://relay.invalid:8080/v1", KEY, BODY, deadlines=SAFE)

    with pytest.raises(ConnectError) as info:
        list(stream)

    assert info.value.kind == "connect"
    assert info.value.message == "Could not resolve the relay's host name relay.invalid:8080."


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A local port where a connect neither completes nor is refused.

    The listener never accepts, and its backlog holds one connection: once that is taken,
    the kernel drops further SYNs, so a connect waits (for its timeout) instead of failing.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(64):
            filler = stack.enter_context(socket.socket())
            filler.settimeout(0.2)
            try:
                filler.connect(address)
            except TimeoutError:
                break
        else:
            pytest.fail("every connection to a full backlog was accepted")
        yield address[1]


def test_it_times_out_when_a_connect_does_not_complete():
    with unanswered_port() as port:
        deadlines = Deadlines(connect=0.5, first_byte=5, idle=5, total=10)
        stream = ChatStream(f"http://127.0.0.1:{port}/v1", KEY, BODY, deadlines=deadlines)
        started = time.monotonic()

        with pytest.raises(UpstreamTimeout) as info:
            list(stream)
        took = time.monotonic() - started

    assert type(info.value) is UpstreamTimeout
    assert info.value.kind == "timeout"
    assert info.value.message == "Could not connect to the relay within 0.5 s."
    assert 0.45 <= took < 4.5  # the connect deadline fired: not a refusal, nor the first byte's (5 s)


def test_it_raises_protocol_error_on_html_to_a_streaming_request(relay):
    page = "<html><body>Welcome to nginx!</body></html>"

    error = failure(relay, respond(200, page, {"Content-Type": "text/html"}))

    assert type(error) is ProtocolError
    assert error.kind == "protocol"
    assert error.message == (
        f"Asked for a stream but the relay answered with text/html: {page!r}. Check the base URL."
    )


def test_it_raises_protocol_error_on_an_event_that_is_not_json(relay):
    error = failure(relay, sse([chunk("Hi"), "not json at all"]))

    assert type(error) is ProtocolError
    assert error.message == "The relay sent an event that is not valid JSON: not json at all"


@pytest.mark.parametrize("mode", MODES)
def test_it_raises_incomplete_stream_at_eof_without_done(relay, mode):
    received, error = run_until_failure(relay, sse([chunk("Hel")], done=False, mode=mode))

    assert received == [chunk("Hel")]
    assert type(error) is IncompleteStream
    assert error.kind == "incomplete"
    assert error.message == (
        "The stream ended before the relay said it was done (no [DONE]); the answer may be cut off."
    )


@pytest.mark.parametrize("mode", MODES)
def test_it_raises_incomplete_stream_when_cut_mid_event(relay, mode):
    head = frames([chunk("Hel")], done=False)
    body = head + b'data: {"id": "chatcmpl-fake", "cho'

    received, error = run_until_failure(relay, sse(body, pieces=[len(head)], mode=mode))

    assert received == [chunk("Hel")]
    assert type(error) is IncompleteStream


def test_it_raises_stream_error_event_on_an_error_object_in_the_stream(relay):
    oops = {"error": {"message": "The model is overloaded", "type": "server_error"}}

    received, error = run_until_failure(relay, sse([chunk("Hel"), oops]))

    assert received == [chunk("Hel")]
    assert type(error) is StreamErrorEvent
    assert error.kind == "stream_error"
    assert error.message == "The relay reported an error mid-answer: The model is overloaded"


def test_it_raises_stream_error_event_on_an_error_event(relay):
    event = 'event: error\ndata: {"message": "Quota exceeded"}'

    error = failure(relay, sse([chunk("Hel"), event]))

    assert type(error) is StreamErrorEvent
    assert error.message == "The relay reported an error mid-answer: Quota exceeded"


def test_it_reads_a_chunk_with_a_null_error_field_as_a_chunk(relay):
    event = {**chunk("Hi"), "error": None}

    assert run(relay, sse([event])) == [event]


ECHOING_RELAYS = {
    "401": respond(401, {"error": {"message": f"Invalid key {KEY}"}}),
    "403": respond(403, {"error": {"message": f"Key {KEY} is disabled"}}),
    "404": respond(404, {"error": {"message": f"No model for {KEY}"}}),
    "400": respond(400, {"error": {"message": f"Bad request from {KEY}"}}),
    "500": respond(500, f"Traceback: key={KEY}", {"Content-Type": "text/plain"}),
    "429": respond(429, {"error": {"message": f"Slow down {KEY}"}}, {"Retry-After": "1"}),
    "redirect": respond(302, b"", {"Location": f"https://elsewhere.example/v1?key={KEY}"}),
    "html": respond(200, f"<p>Hello {KEY}</p>", {"Content-Type": "text/html"}),
    "invalid event": sse([f"key={KEY}"]),
    "error event": sse([{"error": {"message": f"Key {KEY} ran out of credit"}}]),
}


@pytest.mark.parametrize("handler", ECHOING_RELAYS.values(), ids=ECHOING_RELAYS.keys())
def test_it_keeps_the_key_out_of_error_messages(relay, handler):
    error = failure(relay, handler, max_retries=0)

    assert KEY not in error.message
    assert KEY not in str(error)
    assert "[api key]" in error.message


# ---------------------------------------------------------------------------- deadlines


def test_it_times_out_waiting_for_the_first_byte(relay):
    deadlines = Deadlines(connect=5, first_byte=0.3, idle=5, total=10)
    started = time.monotonic()

    error = failure(relay, hang(10), deadlines=deadlines)

    assert type(error) is UpstreamTimeout
    assert error.kind == "timeout"
    assert error.message == "The relay sent no response within 0.3 s."
    assert time.monotonic() - started < 5


def test_it_times_out_when_the_relay_falls_silent_after_the_headers(relay):
    deadlines = Deadlines(connect=5, first_byte=5, idle=0.3, total=10)
    started = time.monotonic()

    error = failure(relay, sse([], done=False, hold_open=10), deadlines=deadlines)

    assert type(error) is UpstreamTimeout
    assert error.message == "The relay sent nothing for 0.3 s."
    assert time.monotonic() - started < 5


def test_it_times_out_when_the_relay_falls_silent_mid_answer(relay):
    deadlines = Deadlines(connect=5, first_byte=5, idle=0.3, total=10)

    received, error = run_until_failure(
        relay, sse([chunk("Hel")], done=False, hold_open=10), deadlines=deadlines
    )

    assert received == [chunk("Hel")]
    assert type(error) is UpstreamTimeout
    assert error.message == "The relay sent nothing for 0.3 s."


def test_it_times_out_when_only_keep_alive_comments_arrive(relay):
    deadlines = Deadlines(connect=5, first_byte=5, idle=0.4, total=10)
    started = time.monotonic()

    error = failure(relay, trickle(every=0.1, count=100), deadlines=deadlines)

    assert type(error) is UpstreamTimeout
    assert error.message == "The relay sent nothing for 0.4 s."
    assert 0.4 <= time.monotonic() - started < 5


def test_it_times_out_after_the_total_deadline(relay):
    deadlines = Deadlines(connect=5, first_byte=5, idle=5, total=0.5)
    started = time.monotonic()

    received, error = run_until_failure(relay, slow_stream(every=0.05), deadlines=deadlines)

    assert type(error) is UpstreamTimeout
    assert error.message == "The answer took longer than the 0.5 s limit."
    assert len(received) > 2
    assert time.monotonic() - started < 5


def test_it_times_out_at_the_total_deadline_while_the_relay_is_silent(relay):
    deadlines = Deadlines(connect=5, first_byte=5, idle=60, total=0.5)
    started = time.monotonic()

    error = failure(relay, sse([], done=False, hold_open=10), deadlines=deadlines)

    assert type(error) is UpstreamTimeout
    assert error.message == "The answer took longer than the 0.5 s limit."
    assert time.monotonic() - started < 5


def test_it_hangs_up_on_the_relay_after_a_deadline(relay):
    deadlines = Deadlines(connect=5, first_byte=5, idle=5, total=0.5)

    error = failure(relay, slow_stream(every=0.05), deadlines=deadlines)

    assert type(error) is UpstreamTimeout
    assert relay.disconnected.wait(2)


def test_it_hangs_up_on_the_relay_after_an_error_event(relay):
    def error_then_more(h) -> None:
        h.start(200, {"Content-Type": "text/event-stream"}, mode="chunked")
        h.write(frames([{"error": {"message": "overloaded"}}], done=False))
        for _ in range(100):
            if not h.write(b": still here\n\n"):
                return
            time.sleep(0.05)

    error = failure(relay, error_then_more)

    assert type(error) is StreamErrorEvent
    assert relay.disconnected.wait(2)


def test_it_reads_its_deadlines_from_settings(settings):
    settings.UPSTREAM_CONNECT_TIMEOUT = 1
    settings.UPSTREAM_FIRST_BYTE_TIMEOUT = 2
    settings.UPSTREAM_IDLE_TIMEOUT = 3
    settings.UPSTREAM_TOTAL_TIMEOUT = 4

    assert Deadlines.from_settings() == Deadlines(connect=1, first_byte=2, idle=3, total=4)


# ---------------------------------------------------------------------------- stopping


def stop_mid_stream(relay: FakeRelay) -> tuple[Consumer, float]:
    """Start a slow answer, stop it after a few chunks; the consumer and when it was stopped."""
    relay.script(slow_stream(words=200, every=0.05))
    token = CancelToken()
    consumer = Consumer(open_stream(relay, cancel=token))
    consumer.start()
    consumer.wait_for(4)
    stopped_at = time.monotonic()
    token.cancel()
    consumer.join(5)
    assert not consumer.is_alive()
    return consumer, stopped_at


def test_it_ends_with_cancelled_within_a_second_of_a_stop(relay):
    consumer, stopped_at = stop_mid_stream(relay)

    assert type(consumer.error) is Cancelled
    assert consumer.error.kind == "stopped"
    assert consumer.ended_at - stopped_at < 1


def test_it_leaves_the_caller_the_chunks_received_before_a_stop(relay):
    consumer, _ = stop_mid_stream(relay)

    words = [chunk(f" w{i}") for i in range(len(consumer.received) - 1)]
    assert len(consumer.received) >= 4
    assert consumer.received == [chunk("", role="assistant"), *words]


def test_it_hangs_up_on_the_relay_when_stopped(relay):
    stop_mid_stream(relay)

    assert relay.disconnected.wait(2)


def test_it_hangs_up_on_the_relay_when_the_caller_stops_reading(relay):
    relay.script(slow_stream(words=200, every=0.05))
    chunks = iter(open_stream(relay))
    next(chunks)

    chunks.close()

    assert relay.disconnected.wait(2)


def test_it_stops_while_waiting_for_the_first_byte(relay):
    relay.script(hang(10))
    token = CancelToken()
    consumer = Consumer(open_stream(relay, cancel=token, deadlines=Deadlines(first_byte=10)))
    consumer.start()
    time.sleep(0.3)
    stopped_at = time.monotonic()

    token.cancel()
    consumer.join(5)

    assert type(consumer.error) is Cancelled
    assert consumer.ended_at - stopped_at < 1
    assert relay.disconnected.wait(2)


def test_it_stops_while_the_relay_is_silent_mid_answer(relay):
    relay.script(sse([chunk("Hel")], done=False, hold_open=10))
    token = CancelToken()
    consumer = Consumer(open_stream(relay, cancel=token))
    consumer.start()
    consumer.wait_for(1)
    time.sleep(0.2)  # blocked in recv() now
    stopped_at = time.monotonic()

    token.cancel()
    consumer.join(5)

    assert type(consumer.error) is Cancelled
    assert consumer.ended_at - stopped_at < 1
    assert consumer.received == [chunk("Hel")]


def test_it_stops_while_waiting_to_retry(relay):
    relay.script(rate_limited("5"))
    token = CancelToken()
    consumer = Consumer(open_stream(relay, cancel=token))
    consumer.start()
    time.sleep(0.3)
    stopped_at = time.monotonic()

    token.cancel()
    consumer.join(5)

    assert type(consumer.error) is Cancelled
    assert consumer.ended_at - stopped_at < 1
    assert len(relay.requests) == 1


def test_it_sends_nothing_once_stopped(relay):
    token = CancelToken()
    token.cancel()

    error = failure(relay, cancel=token)

    assert type(error) is Cancelled
    assert error.message == "Stopped before the request was sent."
    assert relay.requests == []


# ---------------------------------------------------------------------------- request shape


def test_it_posts_to_chat_completions_under_the_base_url(relay):
    list(ChatStream(relay.base_url + "/", KEY, BODY, deadlines=SAFE))

    assert (relay.requests[0].method, relay.requests[0].path) == ("POST", "/v1/chat/completions")


def test_it_sends_the_key_as_a_bearer_token(relay):
    run(relay, sse([chunk("Hi")]))

    assert headers_of(relay.requests[0])["authorization"] == f"Bearer {KEY}"


def test_it_sends_no_authorization_header_without_a_key(relay):
    list(ChatStream(relay.base_url, "", BODY, deadlines=SAFE))

    assert "authorization" not in headers_of(relay.requests[0])


def test_it_asks_for_an_uncompressed_event_stream(relay):
    run(relay, sse([chunk("Hi")]))

    headers = headers_of(relay.requests[0])
    assert (headers["accept"], headers["accept-encoding"]) == ("text/event-stream", "identity")
    assert headers["content-type"] == "application/json"


def test_it_sends_the_providers_extra_headers(relay):
    extra = {"Accept": "application/json", "X-Forwarded-Host": "api.quickrouter.ai"}

    run(relay, sse([chunk("Hi")]), extra_headers=extra)

    headers = headers_of(relay.requests[0])
    assert (headers["accept"], headers["x-forwarded-host"]) == (
        "application/json",
        "api.quickrouter.ai",
    )


def test_it_sends_the_body_exactly_as_given(relay):
    # Seed 001's example, with its typos ("seen", integer temperature) and a tool.
    body = {
        "model": "sora-2",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "an astronaut golden retriever named Sora, 你好"}],
        "stream": True,
        "temperature": 1,
        "seen": 42,
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": "auto",
        "stream_options": {"include_usage": True},
    }

    list(open_stream(relay, body=body))

    assert relay.requests[0].body == body


# ---------------------------------------------------------------------------- list_models


def test_it_lists_model_ids_sorted(relay):
    models = {"object": "list", "data": [{"id": "zeta"}, {"id": "alpha"}, {"id": "mid"}]}
    relay.script(respond(200, models))

    assert list_models(relay.base_url, KEY) == ["alpha", "mid", "zeta"]


def test_it_lists_models_with_a_get_carrying_the_key(relay):
    list_models(relay.base_url, KEY)

    received = relay.requests[0]
    assert (received.method, received.path) == ("GET", "/v1/models")
    assert headers_of(received)["authorization"] == f"Bearer {KEY}"


def test_it_raises_auth_error_when_listing_models_with_a_bad_key(relay):
    relay.script(respond(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}))

    with pytest.raises(AuthError) as info:
        list_models(relay.base_url, KEY)

    assert info.value.message == (
        "The relay rejected the API key (HTTP 401): Incorrect API key provided: [api key]"
    )


def fold_contents(*pieces: str) -> tuple[str, str]:
    """(content, reasoning) after content deltas `pieces` and a finish."""
    acc = Accumulator()
    for piece in pieces:
        acc.apply(chunk(piece))
    acc.apply(chunk(finish="stop"))
    state = acc.state()[0]
    return state["content"], state["reasoning"]


THINKING = "<think>\nLet me think.\n</think>\n\nThe answer is <b>42</b>."


def test_it_moves_an_inline_think_block_into_reasoning_wherever_the_deltas_split():
    for i in range(len(THINKING) + 1):
        for j in range(i, len(THINKING) + 1):
            parts = (THINKING[:i], THINKING[i:j], THINKING[j:])
            assert fold_contents(*parts) == ("The answer is <b>42</b>.", "\nLet me think.\n"), parts


def test_it_names_inline_think_blocks_as_the_reasoning_field():
    acc = Accumulator()
    acc.apply(chunk("The answer."))
    assert acc.reasoning_field is None
    acc.apply(chunk("<think>Hmm</think>Four.", index=1))
    assert acc.reasoning_field == "think"


def test_it_leaves_a_think_tag_written_mid_answer_as_text():
    assert fold_contents("Use ", "<think> tags") == ("Use <think> tags", "")


def test_it_keeps_a_lone_partial_tag_as_text():
    assert fold_contents("<th") == ("<th", "")


@pytest.mark.skipif(
    "loop_reader" not in settings.FAST_PATHS, reason="the loop reader is off (PLAYGROUND_FAST_PATHS)"
)
def test_without_the_urllib3_internals_it_reads_the_stock_way_after_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(loop_reader, "_usable", None)
    monkeypatch.setattr(loop_reader, "_missing_internals", lambda: "urllib3 9.0 is not version 2")
    caplog.set_level("WARNING", logger=loop_reader.__name__)
    with serving("thread") as fake:
        fake.reader = "loop"  # read as the relay reads: offered to a loop first
        events = [chunk("Hello"), chunk(" world"), chunk(finish="stop")]
        for _ in range(2):
            fake.script(sse(events))
            stream = open_stream(fake)
            assert list(stream) == events
            assert stream.on_loop is False
    assert not loop_reader.enabled()
    warnings = [r.getMessage() for r in caplog.records if r.name == loop_reader.__name__]
    assert warnings == [
        "PLAYGROUND_FAST_PATHS: loop_reader is off: urllib3 9.0 is not version 2; streams are read by threads"
    ]

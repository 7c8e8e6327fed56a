"""A real local relay: an HTTP server that speaks SSE as the seed relays do, and
misbehaves on purpose when a test scripts it to.

    relay = FakeRelay()           # serves on 127.0.0.1:<free port>
    relay.base_url                # "http://127.0.0.1:<port>/v1"
    relay.script(sse([...]))      # the next request gets this; then the default
    relay.requests[-1].body       # what the client sent, parsed
    FakeRelay(tls=tls_context(d)) # the same over HTTPS, with a certificate for 127.0.0.1

With nothing scripted it answers like a seed relay: the last user message echoed
word by word (streamed when `stream` is true, usage last when asked), or JSON.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    raw: bytes = b""  # the body's bytes as received


def chunk(
    content: str | None = None,
    *,
    index: int = 0,
    finish: str | None = None,
    role: str | None = None,
    reasoning: str | None = None,
    reasoning_field: str = "reasoning_content",
    tool_calls: list | None = None,
    logprobs: list | None = None,
    model: str = "fake-model",
) -> dict:
    delta: dict = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta[reasoning_field] = reasoning
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [choice],
    }


def usage_chunk(prompt: int, completion: int, **details) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    usage.update(details)
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage}


def frames(events: Iterable[dict | str], *, done: bool = True, newline: str = "\n") -> bytes:
    """The bytes of an SSE body: `data: <json>` events, then `data: [DONE]`."""
    out = []
    for event in events:
        text = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
        if text.startswith(":") or text.startswith("event:"):
            out.append(text + newline * 2)
        else:
            out.append(f"data: {text}{newline}{newline}")
    if done:
        out.append(f"data: [DONE]{newline}{newline}")
    return "".join(out).encode()


Handler = Callable[["_Handler"], None]


def sse(
    events: Iterable[dict | str] | bytes,
    *,
    mode: str = "chunked",
    done: bool = True,
    delay: float = 0.0,
    pieces: list[int] | None = None,
    status: int = 200,
    content_type: str = "text/event-stream",
    newline: str = "\n",
    hold_open: float = 0.0,
) -> Handler:
    """Stream an SSE body, chunked or close-delimited, optionally split at byte offsets
    (`pieces`) and paced (`delay` seconds between pieces; default one piece per event)."""
    body = events if isinstance(events, bytes) else frames(events, done=done, newline=newline)

    def handle(h: _Handler) -> None:
        if pieces is not None:
            cuts = [0, *pieces, len(body)]
            parts = [body[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
        else:
            sep = (newline * 2).encode()
            parts = [p + sep for p in body.split(sep) if p]
        h.start(status, {"Content-Type": content_type, "Cache-Control": "no-cache"}, mode=mode)
        for i, part in enumerate(parts):
            if i and delay:
                time.sleep(delay)
            if not h.write(part):
                return
        if hold_open:
            time.sleep(hold_open)
        h.end()

    return handle


def respond(status: int, body: dict | str | bytes = b"", headers: dict | None = None) -> Handler:
    def handle(h: _Handler) -> None:
        data = (
            body
            if isinstance(body, bytes)
            else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        )
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        h.start(status, {**hdrs, "Content-Length": str(len(data))}, mode="length")
        h.write(data)

    return handle


def echo_authorization() -> Handler:
    """A relay that sends the request's Authorization back: in a response header, in the
    answer's text and in a frame of its own."""

    def handle(h: _Handler) -> None:
        said = h.headers.get("Authorization", "")
        body = frames([chunk(f"you sent {said}", role="assistant"), {"echo": said}, chunk(finish="stop")])
        h.start(200, {"Content-Type": "text/event-stream", "X-Echo-Authorization": said}, mode="chunked")
        h.write(body)
        h.end()

    return handle


def hang(seconds: float) -> Handler:
    """Accept the request and say nothing (no status line) for `seconds`."""

    def handle(h: _Handler) -> None:
        h.server.fake.wait_or_disconnect(h, seconds)

    return handle


def trickle(*, every: float, count: int, then: Handler | None = None) -> Handler:
    """Headers, then only keep-alive comments: `: ping` every `every` seconds."""

    def handle(h: _Handler) -> None:
        h.start(200, {"Content-Type": "text/event-stream"}, mode="chunked")
        for _ in range(count):
            if not h.write(b": ping\n\n"):
                return
            time.sleep(every)
        h.end()

    return handle


def slow_stream(words: int = 200, every: float = 0.05, mode: str = "chunked") -> Handler:
    """A long answer, one word per `every` seconds; records when the client hung up."""

    def handle(h: _Handler) -> None:
        h.start(200, {"Content-Type": "text/event-stream"}, mode=mode)
        h.write(frames([chunk("", role="assistant")], done=False))
        for i in range(words):
            if not h.write(frames([chunk(f" w{i}")], done=False)):
                return
            time.sleep(every)
        h.write(frames([chunk(finish="stop")]))
        h.end()

    return handle


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fake = self.server.fake
        self.received = Received(self.command, self.path, dict(self.headers), body, raw)
        fake.requests.append(self.received)
        self.mode = "length"
        handler = fake.next_handler(self)
        handler(self)
        if self.mode == "close":
            self.close_connection = True

    def start(self, status: int, headers: dict[str, str], *, mode: str) -> None:
        self.mode = mode
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif mode == "close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()

    def write(self, data: bytes) -> bool:
        """False once the client has gone away."""
        try:
            if self.mode == "chunked":
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            else:
                self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            self.server.fake.disconnected.set()
            self.close_connection = True
            return False

    def end(self) -> None:
        """End the body: the terminating chunk, or (close-delimited) closing the socket."""
        if self.mode == "chunked":
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeRelay

    def handle_error(self, request, client_address) -> None:
        # A client hanging up mid-answer is what several tests do on purpose.
        pass


@dataclass
class FakeRelay:
    """A local relay on a free port. Use as a context manager or call close()."""

    requests: list[Received] = field(default_factory=list)
    reply: str = "Hello from the fake relay"
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self._scripts: deque[Handler] = deque()
        self.disconnected = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.server.fake = self
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def script(self, *handlers: Handler) -> FakeRelay:
        self._scripts.extend(handlers)
        return self

    def next_handler(self, h: _Handler) -> Handler:
        if self._scripts:
            return self._scripts.popleft()
        if h.path.endswith("/models"):
            return respond(200, {"object": "list", "data": [{"id": "fake-model"}, {"id": "fake-large"}]})
        return self.default

    def default(self, h: _Handler) -> None:
        body = h.received.body or {}
        words = [w if i == 0 else " " + w for i, w in enumerate(self.reply.split())]
        n = body.get("n") or 1
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(words)}
            choices = [{"index": i, "message": message, "finish_reason": "stop"} for i in range(n)]
            usage = {
                "prompt_tokens": 7,
                "completion_tokens": len(words) * n,
                "total_tokens": 7 + len(words) * n,
            }
            respond(200, {"id": "x", "object": "chat.completion", "choices": choices, "usage": usage})(h)
            return
        events: list = [chunk("", role="assistant", index=i) for i in range(n)]
        events += [chunk(w, index=i) for w in words for i in range(n)]
        events += [chunk(finish="stop", index=i) for i in range(n)]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(usage_chunk(7, len(words) * n))
        sse(events)(h)

    def wait_or_disconnect(self, h: _Handler, seconds: float) -> None:
        """Sleep, noticing if the client closes the connection meanwhile."""
        sock: socket.socket = h.connection
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.settimeout(0.05)
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    self.disconnected.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                self.disconnected.set()
                return
        h.close_connection = True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeRelay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tls_context(directory: Path) -> ssl.SSLContext:
    """A server context with a new self-signed certificate for 127.0.0.1.

    The certificate is written to `directory / "ca.pem"`: the file to trust it by
    (PLAYGROUND_CA_BUNDLE).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake relay")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "ca.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context

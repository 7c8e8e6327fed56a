"""The HTTP side of a request: its session, guarded connections, headers and deadlines.

Connections go only where playground.netguard allows, and each new socket is handed
to the `CancelToken` of the stream being opened on this thread, so Stop can shut it
down from any thread.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from playground import netguard
from playground.keys import Secret
from playground.upstream.errors import AddressRefused


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
    def sock(self) -> socket.socket | None:
        """The socket of the connection opened last for this stream (None before one)."""
        return self._sock

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
# before any byte of the request (and its key) is sent. `current.own_ok`: the stream
# opened on this thread is the Demo relay's, which is this server.
current = threading.local()


def _attach_current(sock: socket.socket | None) -> None:
    token = getattr(current, "token", None)
    if token is not None:
        token.attach(sock)


def _guarded_connect(conn: urllib3.connection.HTTPConnection, connect: Callable[[], None]) -> None:
    own_ok = getattr(current, "own_ok", False)
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

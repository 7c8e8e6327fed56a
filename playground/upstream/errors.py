"""The failures of a request to a relay: one hierarchy rooted at `UpstreamError`.

Each error's `message` is fit to show the person who sent the prompt and never
contains the API key; `kind` names it in the run's record (`Run.error_kind`).
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from playground.keys import Secret
from playground.upstream.redact import scrub

MAX_ERROR_TEXT = 400


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

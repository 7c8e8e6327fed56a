"""The websocket Origin check: scheme, host and port, as Django's CSRF check does for HTTP.

A handshake is let through only when its Origin header equals the request's own origin,
`http://host[:port]` for `ws` (`https://…` for `wss`) where host[:port] is the Host header
and that host is in ALLOWED_HOSTS, or equals an entry of CSRF_TRUSTED_ORIGINS (the public
`https://…` address behind a TLS proxy). Anything else, a missing Origin included, is
closed at the handshake (403)."""

from __future__ import annotations

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def allowed_hosts() -> list[str]:
    """ALLOWED_HOSTS as Django's HttpRequest.get_host applies it (localhost names in DEBUG when empty)."""
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]
    return settings.ALLOWED_HOSTS


def own_origin(scope: dict) -> str | None:
    """`scheme://host[:port]` of the request itself, or None when its Host is not served."""
    host = header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, allowed_hosts()):
        return None
    scheme = SCHEMES.get(scope.get("scheme", "ws"), "http")
    return f"{scheme}://{host}".lower()


def origin_allowed(scope: dict) -> bool:
    origin = header(scope, b"origin")
    if not origin:
        return False
    origin = origin.strip().lower()
    if origin in (trusted.lower() for trusted in settings.CSRF_TRUSTED_ORIGINS):
        return True
    return origin == own_origin(scope)


class SameOriginValidator:
    """ASGI middleware for the websocket router: see the module docstring."""

    def __init__(self, application):
        self.application = application
        self.denier = WebsocketDenier.as_asgi()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await self.denier(scope, receive, send)
        return await self.application(scope, receive, send)

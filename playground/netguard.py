"""Where the server may connect: the base URLs a provider is saved with, and each connection.

A base URL is refused when it is saved (`check_base_url`, the Provider field's validator:
the admin form, `manage.py addprovider`, any model form) when its scheme is not http or
https, when it carries credentials, and, unless PLAYGROUND_ALLOW_PRIVATE_RELAYS is on,
when its host is a link-local or cloud metadata address or this playground itself.
Loopback and private ranges stay allowed: self-hosted relays live there.

A name can resolve elsewhere later (DNS rebinding), so every connection to a relay is
checked again (`check_connect` before connecting, on every address the name resolves to,
and `check_peer` on the address actually connected; playground.upstream's connection
classes call both). The built-in Demo relay is this server: its runs pass `own_ok`.

"This playground" is each address:port this process serves on, as the ASGI server gives
it in the scope (`remember_listening` wraps the application), and PLAYGROUND_DEMO_BASE_URL.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
# Cloud metadata services outside the link-local ranges: AWS's IPv6 one, Alibaba's.
METADATA_ADDRESSES = frozenset(map(ipaddress.ip_address, ("fd00:ec2::254", "100.100.100.200")))
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
# What inet_aton reads as IPv4 besides dotted quads: 2852039166, 0xa9fea9fe, 169.254.43518.
NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
SWITCH = "set PLAYGROUND_ALLOW_PRIVATE_RELAYS=1 to allow it"

# (host, port) pairs this process serves on.
listening: set[tuple[str, int]] = set()


class Refused(Exception):
    """A connection the server must not make; the message says why, for the person who sent."""


def remember_listening(app: Callable) -> Callable:
    """ASGI middleware: note each address the server receives connections on."""

    async def application(scope, receive, send):
        server = scope.get("server")
        if server and server[1] and (server[0], server[1]) not in listening:
            listening.add((server[0], int(server[1])))
        return await app(scope, receive, send)

    return application


def literal_address(host: str) -> Address | None:
    """The address a host names without DNS (an IP literal, or IPv4 as inet_aton reads it)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            pass
    return None


def own_addresses() -> set[tuple[str, int]]:
    own = set(listening)
    if settings.DEMO_BASE_URL:
        parts = urlsplit(settings.DEMO_BASE_URL)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = None
        if parts.hostname and port:
            own.add((parts.hostname, port))
    return own


def _is_local(address: Address) -> bool:
    """Whether `address` is one of this machine's (it can be bound to)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def _reaches(address: Address, port: int, host: str, own_host: str, own_port: int) -> bool:
    """Whether connecting to `address`:`port` (named `host`) reaches a server on own_host:own_port."""
    if port != own_port:
        return False
    if host == own_host.lower().strip("[]"):
        return True
    served = literal_address(own_host.strip("[]")) or (
        ipaddress.ip_address("127.0.0.1") if own_host == "localhost" else None
    )
    if served is None:
        return False
    if address.is_unspecified:  # 0.0.0.0 and :: reach this machine
        return served.is_unspecified or served.is_loopback or _is_local(served)
    if served.is_unspecified:  # a server on every address of this machine
        return address.is_loopback or _is_local(address)
    return address == served


def address_problem(address: Address, port: int, host: str = "", *, own_ok: bool = False) -> str | None:
    """Why the server must not connect to `address`:`port`, in words; None when it may."""
    if settings.ALLOW_PRIVATE_RELAYS:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"cloud metadata address {address}"
    if any(address in network for network in LINK_LOCAL):
        return f"link-local address {address} (cloud metadata services answer there)"
    if not own_ok and any(_reaches(address, port, host, h, p) for h, p in own_addresses()):
        return f"this playground's own address ({address}:{port})"
    return None


def name_problem(host: str) -> str | None:
    if settings.ALLOW_PRIVATE_RELAYS:
        return None
    if host.rstrip(".") in METADATA_NAMES:
        return f"cloud metadata host {host}"
    return None


def base_url_problem(url: str) -> str | None:
    """Why a provider may not be saved with base URL `url`, in words; None when it may."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Enter an http:// or https:// URL, e.g. https://api.example.com/v1"
    if parts.username is not None or parts.password is not None:
        return "Credentials do not belong in the URL: put the key in the API key field."
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "The port must be a number from 1 to 65535."
    host = parts.hostname
    address = literal_address(host)
    if host == "localhost" or host.endswith(".localhost"):
        address = ipaddress.ip_address("127.0.0.1")
    problem = name_problem(host)
    if problem is None and address is not None:
        problem = address_problem(address, port, host)
    if (
        problem is None
        and address is None
        and any((host, port) == (h.lower(), p) for h, p in own_addresses())
    ):
        problem = f"this playground's own address ({host}:{port})"
    if problem:
        return f"Refused: {problem}; {SWITCH}."
    return None


def check_base_url(url: str) -> None:
    """Raise ValidationError saying why `url` may not be a provider's base URL."""
    if problem := base_url_problem(url):
        raise ValidationError(problem)


def check_connect(host: str, port: int, *, own_ok: bool = False) -> None:
    """Before connecting to host:port: raise Refused if it is, or resolves to, a refused address.

    Resolving here does not settle where the connection goes (the name is resolved again
    to connect): `check_peer` checks that.
    """
    if settings.ALLOW_PRIVATE_RELAYS:
        return
    host = host.lower().strip("[]")
    if problem := name_problem(host):
        raise Refused(f"Connection to {host} refused: {problem}; {SWITCH}.")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # connecting fails the same way, and says so
    for *_, sockaddr in found:
        check_address(host, sockaddr, own_ok=own_ok)


def check_peer(host: str, sock: socket.socket, *, own_ok: bool = False) -> None:
    """After connecting: raise Refused if the socket's peer is a refused address."""
    if settings.ALLOW_PRIVATE_RELAYS:
        return
    check_address(host.lower().strip("[]"), sock.getpeername(), own_ok=own_ok)


def check_address(host: str, sockaddr: tuple, *, own_ok: bool) -> None:
    address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])  # fe80::1%eth0
    if problem := address_problem(address, sockaddr[1], host, own_ok=own_ok):
        raise Refused(f"Connection to {host} refused: {problem}; {SWITCH}.")

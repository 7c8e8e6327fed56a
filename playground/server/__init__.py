"""The server process's changes to third-party internals: the speed changes PLAYGROUND_FAST_PATHS
selects (settings.FAST_PATHS), and the websocket backlog bound (a feature, always on).

`install()` is called once, by playground.asgi, after Django is set up and the
application's modules are imported. Each patch is a module here named as in
settings.FAST_PATH_NAMES, with an `install()` that first checks the internals it relies
on; when one is missing or changed it logs one warning naming the patch and what, and
the stock behaviour stays. `installed()` is the set of fast paths in effect.
`asgi_handler()` and `websocket_auth_stack()` build the application's parts accordingly:
with none installed, Django's own ASGI handler and channels' AuthMiddlewareStack.

`loop_reader` is not installed here: playground.upstream reads settings.FAST_PATHS.
docs/fast-paths.md says what each patch changes, why, and what it checks.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from django.conf import settings

# The ones installed here, in the order they are.
PATCHES = (
    "request_threads",
    "ws_frames",
    "eager_write",
    "memory_layer",
    "consumer_loop",
    "gil_switch",
)

_installed: set[str] = set()


def install(names: Iterable[str] | None = None) -> frozenset[str]:
    """Install the backlog bound, then the named fast paths (default: settings.FAST_PATHS)
    whose checks pass; returns `installed()`."""
    from playground.server import backlog

    names = settings.FAST_PATHS if names is None else frozenset(names)
    backlog.install()
    for name in PATCHES:
        if name in _installed or name not in names:
            continue
        if importlib.import_module(f"{__name__}.{name}").install():
            _installed.add(name)
    return installed()


def installed() -> frozenset[str]:
    """The fast paths installed in this process."""
    return frozenset(_installed)


def asgi_handler():
    """The HTTP application: the pooled-thread handler when `request_threads` is
    installed, else Django's own (get_asgi_application)."""
    if "request_threads" in _installed:
        from playground.server.request_threads import ASGIHandler

        return ASGIHandler()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def websocket_auth_stack(inner):
    """Cookies, session and user for websockets: channels' AuthMiddlewareStack."""
    from channels.auth import AuthMiddlewareStack

    return AuthMiddlewareStack(inner)

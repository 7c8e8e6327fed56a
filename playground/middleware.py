"""Django's middleware, arranged for ASGI: fewer trips between the event loop and a thread.

Under Daphne, Django runs each middleware that can be async in async mode, and
calls its (synchronous) `process_request` and `process_response` through
`sync_to_async`: with the usual stack, a GET of the JSON API crossed between the
event loop and a thread 16 times (6 with this module; tests/test_views.py counts
them). Each crossing waits for the GIL, and while the loop relays other answers
that wait is most of a submission's time: at 50 streams, probe submissions took
from 8 ms to over 100 ms from their arrival to the view, about 4 ms idle.

- `SecurityMiddleware` only reads settings and sets headers: it runs inline on
  the loop, ahead of ServeStatic as Django's docs place it.
- The rest run synchronously, all in one trip to the thread, as under WSGI:
  they are marked sync-only, which makes Django chain them without hops.
- `ASGIHandler` puts the URL resolving, the `process_view` hooks and a
  synchronous view in that same trip. Django's handler ends the chain with its
  async `_get_response_async`, so the innermost sync middleware crossed back to
  the loop, which then crossed to a thread for each `process_view` hook and
  again for the view: a submission took five trips where one does. Async views
  still work: the synchronous handler calls them on the loop (`async_to_sync`).
"""

from asgiref.sync import AsyncToSync, sync_to_async
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.core import signals
from django.core.handlers import asgi
from django.db import close_old_connections, reset_queries
from django.middleware import clickjacking, common, csrf, security


class ASGIHandler(asgi.ASGIHandler):
    """Django's ASGI handler whose middleware chain ends in the synchronous `_get_response`.

    It also drops Django's receivers of `request_started`, `close_old_connections` and
    `reset_queries`: Django runs each ASGI request in a thread of its own, which has
    no connections yet to close or reset, and these synchronous receivers cost every
    request one more trip to a thread before its middleware. (`request_finished`
    still closes the request's connection.)
    """

    def __init__(self) -> None:
        signals.request_started.disconnect(close_old_connections)
        signals.request_started.disconnect(reset_queries)
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # Loaded as for WSGI: the sync handler at the bottom, sync view hooks, each
        # middleware in the mode it can run (the async-only ones adapt the chain below them
        # with one sync_to_async). Django then adapts the top for a sync caller; undo that.
        super().load_middleware(is_async=False)
        chain = self._middleware_chain
        if isinstance(chain, AsyncToSync):
            self._middleware_chain = chain.awaitable
        else:
            self._middleware_chain = sync_to_async(chain, thread_sensitive=True)


class SecurityMiddleware(security.SecurityMiddleware):
    async def __acall__(self, request):
        response = self.process_request(request)
        if response is None:
            response = await self.get_response(request)
        return self.process_response(request, response)


def _sync_only(middleware: type) -> type:
    return type(middleware.__name__, (middleware,), {"async_capable": False, "__module__": __name__})


SessionMiddleware = _sync_only(sessions.SessionMiddleware)
CommonMiddleware = _sync_only(common.CommonMiddleware)
CsrfViewMiddleware = _sync_only(csrf.CsrfViewMiddleware)
AuthenticationMiddleware = _sync_only(auth.AuthenticationMiddleware)
MessageMiddleware = _sync_only(messages.MessageMiddleware)
XFrameOptionsMiddleware = _sync_only(clickjacking.XFrameOptionsMiddleware)

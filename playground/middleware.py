"""Django's middleware, arranged for ASGI: fewer trips between the event loop and a thread.

Under Daphne, Django runs each middleware that can be async in async mode, and
calls its (synchronous) `process_request` and `process_response` through
`sync_to_async`: with the usual stack, about fourteen round trips between the
event loop and the request's thread per request. Each trip waits for the GIL,
and while the loop relays other answers, that wait is what a submission spends
most of its time on (at 50 streams: 8–138 ms from the request's arrival to the
view, median of ten submissions per run).

- `SecurityMiddleware` only reads settings and sets headers: it runs inline on
  the loop, ahead of ServeStatic as Django's docs place it.
- The rest run synchronously, all in one trip to the thread, as under WSGI:
  they are marked sync-only, which makes Django chain them without hops.
"""

from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.middleware import clickjacking, common, csrf, security


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

"""Fast path `request_threads`: Django's ASGI handler, its middleware in one trip to a pooled thread.

`ASGIHandler` is Django's, with two differences:

- It loads settings.MIDDLEWARE (Django's stock classes, unchanged) as for WSGI: each
  middleware that can run synchronously does, chained without hops, and the URL
  resolving, the `process_view` hooks and a synchronous view run in that same trip to
  a thread. Async-only middleware (ServeStatic, first) runs on the loop. Async views
  still work: the synchronous handler calls them on the loop (`async_to_sync`).
- Its requests run on pooled threads (`RequestThread`), each keeping its database
  connection from one request to the next (`CONN_MAX_AGE`, `CONN_HEALTH_CHECKS`).

Its `install()` checks Django's version range and that the parts of Django's handler
and asgiref used or copied here are as they were: `ASGIHandler.__call__`,
`get_response_async` awaiting `_middleware_chain`, `load_middleware(is_async)`,
`ThreadSensitiveContext(executor=...)` and `AsyncToSync.awaitable`. playground.asgi
serves this handler only when it is installed (playground.server.asgi_handler).
"""

import asyncio
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import AsyncToSync, ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.handlers import asgi, base
from django.db import close_old_connections, connections, reset_queries

from playground.server import checks

NAME = "fast path request_threads"


class RequestThread(ThreadPoolExecutor):
    """One thread that runs one request's synchronous code at a time, then the next one's.

    `busy` counts calls submitted and not finished: a request the server cancelled
    returns while its view may still run, and that thread is not handed to another
    request. (A call cancelled before it started stays counted: its thread is
    dropped, never wrongly reused.)
    """

    numbers = itertools.count(1)

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix=f"request-{next(self.numbers)}")
        self.busy = 0
        self.lock = threading.Lock()
        self.idle_since = 0.0
        self.new_request = False

    def submit(self, fn, /, *args, **kwargs):
        with self.lock:
            self.busy += 1
        return super().submit(self._counted, fn, *args, **kwargs)

    def _counted(self, fn, *args, **kwargs):
        if self.new_request:  # Django's request_started receiver, without its own trip
            self.new_request = False
            reset_queries()
        try:
            return fn(*args, **kwargs)
        finally:  # before the caller hears of the result
            with self.lock:
                self.busy -= 1


class ASGIHandler(asgi.ASGIHandler):
    """Django's ASGI handler whose middleware chain ends in the synchronous `_get_response`.

    It also drops Django's receivers of `request_started`, `close_old_connections` and
    `reset_queries`: these synchronous receivers cost every request one more trip to
    a thread before its middleware. `request_finished` still runs
    `close_old_connections` on the request's thread at its end: a connection past
    its age or broken is closed, and the next request checks it first
    (`CONN_HEALTH_CHECKS`). `reset_queries` runs on the request's thread before its
    first call (with DEBUG on, each request's query log starts empty).
    """

    IDLE_THREADS = 16  # threads (and database connections) kept for the next requests

    def __init__(self) -> None:
        signals.request_started.disconnect(close_old_connections)
        signals.request_started.disconnect(reset_queries)
        super().__init__()
        self.idle: list[RequestThread] = []  # the most recently used last
        self.max_idle = connections["default"].settings_dict.get("CONN_MAX_AGE") or 0
        self.pruning: asyncio.TimerHandle | None = None
        self.pruning_loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope, receive, send):
        """Django's, with a pooled thread for the request instead of a new one.

        The thread keeps its database connection from one request to the next: the
        response's `request_finished` closes it only when it is past `CONN_MAX_AGE`
        or broken, and (with `CONN_HEALTH_CHECKS`) marks it to be checked before the
        next request uses it.
        """
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self.idle.pop() if self.idle else RequestThread()
        thread.new_request = True
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            if thread.busy == 0 and len(self.idle) < self.IDLE_THREADS:
                thread.idle_since = asyncio.get_running_loop().time()
                self.idle.append(thread)
                self.prune_later()
            else:  # still running a view the server cancelled, or enough are idle
                self.retire(thread)

    def prune_later(self) -> None:
        """End the threads (and their connections) left idle for CONN_MAX_AGE seconds.

        A thread's own requests close its connection once past that age; one that
        no request takes any more (after a burst) would otherwise keep it open.
        """
        loop = asyncio.get_running_loop()
        if not self.max_idle or not self.idle or (self.pruning is not None and self.pruning_loop is loop):
            return
        oldest = self.idle[0].idle_since  # the list runs from the longest idle to the latest
        self.pruning, self.pruning_loop = loop.call_at(oldest + self.max_idle, self.prune), loop

    def prune(self) -> None:
        self.pruning = None
        cutoff = asyncio.get_running_loop().time() - self.max_idle
        while self.idle and self.idle[0].idle_since <= cutoff:
            self.retire(self.idle.pop(0))
        self.prune_later()

    @staticmethod
    def retire(thread: RequestThread) -> None:
        thread.submit(connections.close_all)  # after whatever it still runs
        thread.shutdown(wait=False)

    def close_idle_threads(self) -> None:
        """Close the idle threads' database connections and end the threads.

        For tests and shutdown: call it while the server's loop is not running.
        """
        if self.pruning is not None:
            self.pruning.cancel()
            self.pruning = None
        idle, self.idle = self.idle, []
        for thread in idle:
            self.retire(thread)
            thread.shutdown()  # waits for it

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


def missing() -> list[str]:
    found = checks.version("django", (5, 2), (5, 3))
    found += checks.names_used(asgi.ASGIHandler.__call__, ("ThreadSensitiveContext", "ValueError", "handle"))
    found += checks.sets(base.BaseHandler.get_response_async, ("_middleware_chain",))
    found += checks.parameters(base.BaseHandler.load_middleware, ("is_async",))
    found += checks.parameters(ThreadSensitiveContext.__init__, ("executor",))
    found += checks.sets(AsyncToSync.__init__, ("awaitable",))
    return found


def install() -> bool:
    """Check Django's and asgiref's internals; `ASGIHandler()` is then what is served."""
    if problems := missing():
        return checks.refuse(NAME, problems)
    return True

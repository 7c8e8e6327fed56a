"""Fast path `ws_session`: channels' session middleware for websockets, without its send wrapper.

channels' SessionMiddleware wraps `send` to save the session and set its cookie on an
`http.response.start`, which a websocket never sends. `WebsocketSessionMiddleware`
loads the session from the cookie as channels does and hands the consumer the
server's own `send`. `websocket_auth_stack` is channels' AuthMiddlewareStack (cookies,
session, user) with it in place of channels' session middleware.

Its `install()` checks that channels' `SessionMiddleware.__call__` is the code this
copies and that `InstanceSessionWrapper(scope, send)` still resolves the session.
"""

from channels import auth as channels_auth
from channels import sessions as channels_sessions

from playground.server import checks

NAME = "fast path ws_session"


class WebsocketSessionMiddleware(channels_sessions.SessionMiddleware):
    """channels' SessionMiddleware; the consumer gets the server's `send` itself."""

    async def __call__(self, scope, receive, send):
        wrapper = channels_sessions.InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def websocket_auth_stack(inner):
    """channels' AuthMiddlewareStack (cookies, session, user), with the session middleware above."""
    return channels_sessions.CookieMiddleware(WebsocketSessionMiddleware(channels_auth.AuthMiddleware(inner)))


def missing() -> list[str]:
    found = checks.names_used(
        channels_sessions.SessionMiddleware.__call__,
        ("InstanceSessionWrapper", "inner", "resolve_session", "scope", "send"),
    )
    found += checks.parameters(channels_sessions.InstanceSessionWrapper.__init__, ("scope", "send"))
    found += checks.attributes(channels_sessions.InstanceSessionWrapper, ("resolve_session",))
    found += checks.names_used(
        channels_auth.AuthMiddlewareStack, ("CookieMiddleware", "SessionMiddleware", "AuthMiddleware")
    )
    return found


def install() -> bool:
    """Check channels' session middleware; `websocket_auth_stack` is then what is served."""
    if problems := missing():
        return checks.refuse(NAME, problems)
    return True

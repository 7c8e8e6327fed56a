"""Issue 15 §3, access: the websocket Origin check (scheme, host and port) and login throttling
(the sockets closed when access is taken away are in tests/test_access.py)."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from playground.asgi import application
from playground.origins import origin_allowed
from tests.test_relay import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def handshake(user, conversation, host: str, origin: str) -> bool:
    """Whether a websocket on the conversation is accepted with these Host and Origin headers."""
    cookie = await sync_to_async(session_cookie)(user)
    headers = [(b"host", host.encode()), (b"origin", origin.encode()), (b"cookie", cookie.encode())]
    ws = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers)
    connected, _ = await ws.connect(timeout=5)
    await ws.disconnect()
    return connected


async def test_issue15_3_origin_same_origin_is_accepted(alice, conversation):
    assert await handshake(alice, conversation, "localhost:8000", "http://localhost:8000")


async def test_issue15_3_origin_another_port_is_refused(alice, conversation):
    assert not await handshake(alice, conversation, "localhost:8000", "http://localhost:9999")
    assert not await handshake(alice, conversation, "localhost:8000", "https://localhost:8000")
    assert not await handshake(alice, conversation, "localhost:8000", "http://localhost")


async def test_issue15_3_origin_host_not_served_is_refused(alice, conversation):
    """A Host outside ALLOWED_HOSTS is no origin of ours, even when the Origin matches it."""
    assert not await handshake(alice, conversation, "evil.example:8000", "http://evil.example:8000")


async def test_issue15_3_origin_trusted_origin_is_accepted(alice, conversation, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://playground.example.com"]
    assert await handshake(alice, conversation, "localhost:8000", "https://playground.example.com")
    assert not await handshake(alice, conversation, "localhost:8000", "https://playground.example.com:8443")


def test_issue15_3_origin_scheme_follows_the_socket(settings):
    """wss:// is served to https:// pages only, ws:// to http:// ones."""
    scope = {"type": "websocket", "scheme": "wss", "headers": [(b"host", b"localhost"), (b"origin", b"")]}
    scope["headers"][1] = (b"origin", b"https://localhost")
    assert origin_allowed(scope)
    scope["headers"][1] = (b"origin", b"http://localhost")
    assert not origin_allowed(scope)


# Login throttling: playground/logins.py.


@pytest.fixture
def empty_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def log_in(client, path: str, username: str, password: str):
    return client.post(path, {"username": username, "password": password})


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_issue15_3_login_the_sixth_failure_for_a_username_is_refused(path, alice, bob, empty_cache, client):
    bob.is_staff = True  # the admin site lets staff in
    bob.save()
    for _ in range(5):
        assert log_in(client, path, "alice", "wrong").status_code == 200
    refused = log_in(client, path, "alice", "wrong")
    assert refused.status_code == 429
    assert "Too many failed logins. Try again in 15 minutes." in refused.content.decode()
    # The right password does not get through while the lock lasts...
    assert log_in(client, path, "alice", "alice-password").status_code == 429
    assert "_auth_user_id" not in client.session
    # ...and another username is not affected.
    assert log_in(client, path, "bob", "bob-password").status_code == 302


def test_issue15_3_login_twenty_failures_from_an_address_lock_it(alice, bob, empty_cache, client, settings):
    for i in range(20):
        assert log_in(client, "/accounts/login/", f"nobody{i}", "wrong").status_code == 200
    assert log_in(client, "/accounts/login/", "bob", "bob-password").status_code == 429
    other = Client(REMOTE_ADDR="10.0.0.2")
    assert log_in(other, "/accounts/login/", "bob", "bob-password").status_code == 302


def test_issue15_3_login_success_clears_the_usernames_count(alice, empty_cache, client):
    for _ in range(4):
        log_in(client, "/accounts/login/", "alice", "wrong")
    assert log_in(client, "/accounts/login/", "alice", "alice-password").status_code == 302
    for _ in range(4):
        assert log_in(Client(), "/accounts/login/", "alice", "wrong").status_code == 200

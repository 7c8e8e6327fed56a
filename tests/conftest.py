import asyncio
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from playground.models import DEMO_PROVIDER_NAME, Conversation, Membership, Provider, Workspace, new_demo_key
from tests.fakes import FakeRelay

CANARY_KEY = "sk-canary-7f3a9c2e5b1d4e6f8a0b"


@pytest.fixture(scope="session", autouse=True)
def close_thread_connections(django_db_setup, django_db_blocker):
    """Async tests reach the database through asgiref's one shared sync thread (the ORM's
    a* methods, sync_to_async) and the ASGI handler's pooled request threads, whose
    connections stay open between requests: PostgreSQL then refused to drop the test
    database ("being accessed by other users"). Close them first."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all)())
        asgi = sys.modules.get("playground.asgi")
        if close_idle_threads := getattr(getattr(asgi, "django_asgi_app", None), "close_idle_threads", None):
            close_idle_threads()  # the request_threads fast path's pool


def pytest_sessionfinish(session):
    """Django deletes the SQLite test database; its -wal and -shm files stay behind while
    the relay's keeper thread still holds a connection to it. Remove them too."""
    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and name:
        for suffix in ("-wal", "-shm", "-journal"):
            Path(name + suffix).unlink(missing_ok=True)


@pytest.fixture
def workspace(db):
    workspace = Workspace.objects.create(name="Acme", slug="acme")
    demo = Provider(workspace=workspace, name=DEMO_PROVIDER_NAME, is_demo=True)
    demo.set_api_key(new_demo_key())
    demo.save()
    return workspace


@pytest.fixture
def alice(workspace):
    """An owner of the Acme workspace."""
    user = User.objects.create_user("alice", password="alice-password")
    Membership.objects.create(workspace=workspace, user=user, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def bob(workspace):
    """A member of the Acme workspace."""
    user = User.objects.create_user("bob", password="bob-password")
    Membership.objects.create(workspace=workspace, user=user)
    return user


@pytest.fixture
def as_alice(alice):
    """A test client logged in as alice."""
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def charlie(db, workspace):
    """Someone in another workspace only."""
    other = Workspace.objects.create(name="Other", slug="other")
    user = User.objects.create_user("charlie", password="charlie-password")
    Membership.objects.create(workspace=other, user=user)
    return user


@pytest.fixture
def conversation(alice, workspace):
    """An untitled conversation of alice's in Acme (modules needing more define their own)."""
    return Conversation.objects.create(workspace=workspace, creator=alice)


@pytest.fixture
def fake_relay():
    with FakeRelay() as relay:
        yield relay


@pytest.fixture
def provider(workspace, fake_relay):
    """A provider pointing at the local fake relay, holding the canary key."""
    provider = Provider(workspace=workspace, name="Fake", base_url=fake_relay.base_url)
    provider.set_api_key(CANARY_KEY)
    provider.save()
    return provider


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    """In-process tests get a fresh event loop each; channels_redis binds its locks and
    pools to the first loop that uses them, so these tests use the in-memory layer.
    The Redis path is tested for real across Daphne processes (test_scaleout, and the
    browser tests in the PostgreSQL + Redis pass)."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": settings.IN_MEMORY_CHANNEL_LAYER,
            "CONFIG": {"capacity": settings.CHANNEL_CAPACITY},
        }
    }

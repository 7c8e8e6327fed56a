"""Secrets stay secret: a canary key never reaches a page, a websocket frame, a log line,
an error, an export or the database in plaintext; keys rotate under new encryption keys."""

import io
import json
import logging
import os

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from cryptography.fernet import Fernet
from django.core import serializers
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from playground import keys
from playground.asgi import application
from playground.models import Conversation, Provider
from tests.conftest import CANARY_KEY
from tests.fakes import respond
from tests.test_relay import headers, receive_until, session_cookie, submit, watch

pytestmark = pytest.mark.django_db(transaction=True)


async def get(cookie: str, path: str) -> str:
    response = await HttpCommunicator(application, "GET", path, headers=headers(cookie)).get_response(
        timeout=10
    )
    return response["body"].decode()


def everything_stored() -> str:
    """Every row of every table, as JSON, plus the SQLite files' raw bytes when on SQLite."""
    from django.apps import apps

    dumped = serializers.serialize("json", [o for m in apps.get_models() for o in m.objects.all()])
    raw = ""
    if connection.vendor == "sqlite":
        name = connection.settings_dict["NAME"]
        for path in (name, f"{name}-wal"):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    raw += f.read().decode("latin-1")
    return dumped + raw


async def test_a_canary_key_appears_nowhere(alice, workspace, fake_relay, caplog):
    caplog.set_level(logging.DEBUG)
    os.environ["PLAYGROUND_PROVIDER_KEY"] = CANARY_KEY
    try:
        out = io.StringIO()
        await sync_to_async(call_command)(
            "addprovider", "Canary", "--base-url", fake_relay.base_url, "--workspace", "acme", stdout=out
        )
    finally:
        del os.environ["PLAYGROUND_PROVIDER_KEY"]
    provider = await Provider.objects.aget(name="Canary")
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice)
    cookie = await sync_to_async(session_cookie)(alice)
    ws = await watch(cookie, conversation)
    frames = [ws.synced]
    await submit(cookie, conversation, provider, "hello")
    frames += await receive_until(ws, "run.done")
    fake_relay.script(respond(401, {"error": {"message": f"Incorrect API key provided: {CANARY_KEY}."}}))
    status, answer = await submit(cookie, conversation, provider, "again")
    frames += await receive_until(ws, "run.done")
    await ws.disconnect()
    assert fake_relay.requests[0].headers["Authorization"] == f"Bearer {CANARY_KEY}"
    seen = [out.getvalue(), json.dumps(frames), json.dumps(answer), caplog.text]
    for path in (
        "/",
        f"/c/{conversation.id}/",
        f"/api/conversations/{conversation.id}/",
        f"/api/runs/{answer['run']['id']}/",
        f"/api/providers/{provider.id}/models/",
        "/providers/",
        "/api/providers/",
        f"/api/providers/{provider.id}/",
    ):
        seen.append(await get(cookie, path))
    seen.append(await sync_to_async(everything_stored)())
    assert "Incorrect API key provided: [api key]" in frames[-1]["run"]["error"]["message"]
    assert "sk-\\u20268a0b" in seen[4]  # the page shows the hint ("sk-…8a0b"), not the key
    for text in seen:
        assert CANARY_KEY not in text
        assert CANARY_KEY[3:] not in text


def test_the_admin_never_renders_a_stored_key(alice, provider):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client = Client()
    client.force_login(alice)
    page = client.get(f"/admin/playground/provider/{provider.id}/change/").content.decode()
    assert "sk-…8a0b" in page
    assert CANARY_KEY not in page
    assert provider.api_key_encrypted not in page


def test_the_admin_sets_a_new_key_without_showing_it(alice, provider):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client = Client()
    client.force_login(alice)
    form = {
        "workspace": provider.workspace_id,
        "name": "Fake",
        "base_url": provider.base_url,
        "api_key": "sk-replacement-0000-9999",
        "extra_headers": "{}",
        "enabled": "on",
    }
    response = client.post(f"/admin/playground/provider/{provider.id}/change/", form)
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.get_api_key().reveal() == "sk-replacement-0000-9999"
    assert provider.key_hint == "sk-…9999"


def test_moving_a_provider_to_another_base_url_takes_its_key_again(alice, provider):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client = Client()
    client.force_login(alice)
    path = f"/admin/playground/provider/{provider.id}/change/"
    form = {"workspace": provider.workspace_id, "name": "Fake", "extra_headers": "{}", "enabled": "on"}
    elsewhere = {**form, "base_url": "https://elsewhere.example/v1", "api_key": ""}
    response = client.post(path, elsewhere)
    assert response.status_code == 200
    assert (
        "Enter the key again: a changed base URL does not keep the stored key." in response.content.decode()
    )
    provider.refresh_from_db()
    assert provider.base_url != "https://elsewhere.example/v1"
    assert client.post(path, {**form, "base_url": provider.base_url, "api_key": ""}).status_code == 302
    assert client.post(path, {**elsewhere, "api_key": "sk-new-one-1234"}).status_code == 302
    provider.refresh_from_db()
    assert provider.base_url == "https://elsewhere.example/v1"
    assert provider.get_api_key().reveal() == "sk-new-one-1234"


def test_messages_have_their_own_admin_pages(alice, workspace):
    from playground.models import Conversation, Message

    conversation = Conversation.objects.create(workspace=workspace, creator=alice, title="t")
    alice.is_staff = alice.is_superuser = True
    alice.save()
    message = Message.objects.create(conversation=conversation, position=1, role="user", content="find me")
    client = Client()
    client.force_login(alice)
    listing = client.get("/admin/playground/message/", {"q": "find me"}).content.decode()
    assert f"/admin/playground/message/{message.id}/change/" in listing
    assert client.get(f"/admin/playground/message/{message.id}/change/").status_code == 200


def test_keys_are_stored_encrypted(provider):
    assert CANARY_KEY not in provider.api_key_encrypted
    assert Provider.objects.get(id=provider.id).get_api_key().reveal() == CANARY_KEY


@pytest.fixture(autouse=True)
def fresh_key_cache():
    keys.multifernet.cache_clear()
    yield
    keys.multifernet.cache_clear()


def use_keys(settings, *fernet_keys: str) -> None:
    settings.ENCRYPTION_KEYS = list(fernet_keys)
    keys.multifernet.cache_clear()


def encrypt_all_again() -> None:
    for each in Provider.objects.all():
        each.set_api_key(each.get_api_key().reveal())
        each.save()


def test_a_stored_key_survives_rotation_and_the_old_encryption_key_can_go(provider, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    use_keys(settings, old, *keys.load_keys())
    encrypt_all_again()
    use_keys(settings, new, old)
    call_command("rotatekeys", stdout=io.StringIO())
    use_keys(settings, new)
    assert Provider.objects.get(id=provider.id).get_api_key().reveal() == CANARY_KEY


def test_rotation_with_the_key_file_replaces_the_file_key(provider, settings, tmp_path):
    use_keys(settings, *keys.load_keys())
    plaintexts = {p.id: p.get_api_key().reveal() for p in Provider.objects.all()}
    settings.ENCRYPTION_KEY_FILE = tmp_path / "encryption.keys"
    use_keys(settings)
    for each in Provider.objects.all():
        each.set_api_key(plaintexts[each.id])
        each.save()
    before = settings.ENCRYPTION_KEY_FILE.read_text()
    call_command("rotatekeys", stdout=io.StringIO())
    after = settings.ENCRYPTION_KEY_FILE.read_text()
    assert after != before
    assert len(after.split()) == 1
    assert oct(settings.ENCRYPTION_KEY_FILE.stat().st_mode & 0o777) == "0o600"
    assert Provider.objects.get(id=provider.id).get_api_key().reveal() == CANARY_KEY


def test_rotation_refuses_when_a_stored_key_cannot_be_decrypted(provider, settings):
    use_keys(settings, Fernet.generate_key().decode())
    with pytest.raises(CommandError, match="Fake"):
        call_command("rotatekeys", stdout=io.StringIO())


def test_a_key_under_an_unknown_encryption_key_fails_clearly(provider, settings):
    use_keys(settings, Fernet.generate_key().decode())
    with pytest.raises(keys.KeyDecryptError, match="cannot be decrypted"):
        Provider.objects.get(id=provider.id).get_api_key().reveal()

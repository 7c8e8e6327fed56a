"""Issue 15, item 2: a member cannot make the server fetch anything.

A JSON Schema's `$ref` never leads the server anywhere (a loopback server counts what
it receives), and provider base URLs are refused at link-local and metadata addresses
and at the playground's own, when saved and again when connecting.
"""

import io
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.test import Client

from playground import netguard, relay
from playground.models import Provider, Run
from tests.conftest import CANARY_KEY
from tests.fakes import FakeRelay, chunk, sse
from tests.servers import AppServer, app_database, manage
from tests.servers import Client as ServerClient
from tests.test_relay import post, receive_until, session_cookie, submit, wait_for, watch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_cookie(alice):
    return session_cookie(alice)


@pytest.fixture
def elsewhere():
    """A loopback HTTP server a schema may point at; `elsewhere.requests` is what it received."""
    with FakeRelay() as server:
        yield server


def json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "card", "schema": schema}}


def remote(elsewhere) -> dict:
    return {"type": "object", "properties": {"a": {"$ref": f"http://127.0.0.1:{elsewhere.port}/a.json"}}}


MISSING = {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}


# ---------------------------------------------------------------------------- $ref


async def test_a_schema_ref_that_does_not_resolve_within_it_is_refused_at_submit(
    alice_cookie, conversation, provider, elsewhere
):
    for schema, ref in [(remote(elsewhere), f"http://127.0.0.1:{elsewhere.port}/a.json"), (MISSING, "#")]:
        status, data = await submit(
            alice_cookie, conversation, provider, "card", response_format=json_schema(schema)
        )
        assert status == 400, data
        assert data["fields"]["response_format"].startswith("json_schema.schema refers to '" + ref)
        assert "which is not in the schema" in data["fields"]["response_format"]
    assert await Run.objects.acount() == 0
    assert elsewhere.requests == []
    local = {"$defs": {"a": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/a"}}}
    status, data = await submit(
        alice_cookie, conversation, provider, "card", response_format=json_schema(local)
    )
    assert status == 201, data
    await wait_for(data["run"]["id"])


def stored_run(alice, conversation, provider, schema: dict) -> tuple[Run, relay.Target]:
    """A run holding `schema`, as one submitted before the submit check stored it."""
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "card"}], "stream": True}
    body["response_format"] = json_schema(schema)
    run = Run.objects.create(
        conversation=conversation,
        user=alice,
        provider=provider,
        provider_name=provider.name,
        model="fake-model",
        request_body=body,
        position=1,
    )
    run = Run.objects.select_related("conversation", "user", "provider").get(id=run.id)
    run.load_request()  # the relay reads it on the loop, where queries cannot run
    return run, relay.Target(provider.base_url, CANARY_KEY)


async def test_a_schema_ref_fetches_nothing_and_the_run_ends_with_a_verdict(
    alice, alice_cookie, conversation, provider, fake_relay, elsewhere
):
    """The verdict is computed once, as the run ends: its final event reaches watchers,
    and neither it nor the transcript and run detail, served again and again, fetch."""
    ws = await watch(alice_cookie, conversation)
    for schema, ref in [(remote(elsewhere), f"http://127.0.0.1:{elsewhere.port}/a.json"), (MISSING, "#")]:
        fake_relay.script(sse([chunk('{"a": 1}'), chunk(finish="stop")]))
        run, target = await sync_to_async(stored_run)(alice, conversation, provider, schema)
        await relay.process.ensure_started()
        relay.start_run(run, await sync_to_async(run.to_dict)(), target, relay.reserve_slot(), [])
        done = (await receive_until(ws, "run.done"))[-1]["run"]
        assert done["status"] == "completed"
        [verdict] = done["checks"]
        assert verdict["valid"] is False
        assert verdict["errors"][0].startswith(f"schema refers to '{ref}")
        assert "which is not in the schema" in verdict["errors"][0]
        for _ in range(3):
            status, transcript = await post(
                alice_cookie, f"/api/conversations/{conversation.id}/", method="GET"
            )
            assert status == 200
            assert [r["checks"] for r in transcript["runs"] if r["id"] == run.id] == [done["checks"]]
            status, detail = await post(alice_cookie, f"/api/runs/{run.id}/", method="GET")
            assert status == 200
            assert detail["checks"] == done["checks"]
    await ws.disconnect()
    assert elsewhere.requests == []


# ---------------------------------------------------------------------------- base URLs

REFUSED = {
    "ftp://relay.example/v1": "Enter an http:// or https:// URL",
    "file:///etc/passwd": "Enter an http:// or https:// URL",
    "http://user:pw@relay.example/v1": "Credentials do not belong in the URL",
    "http://169.254.169.254/latest": "Refused: link-local address 169.254.169.254",
    "http://2852039166/v1": "Refused: link-local address 169.254.169.254",
    "http://[::ffff:169.254.169.254]/v1": "Refused: link-local address 169.254.169.254",
    "http://[fe80::1]:8080/v1": "Refused: link-local address fe80::1",
    "http://[fd00:ec2::254]/v1": "Refused: cloud metadata address fd00:ec2::254",
    "http://metadata.google.internal/computeMetadata/v1": "Refused: cloud metadata host",
    "http://metadata/v1": "Refused: cloud metadata host metadata",
    "http://127.0.0.1:8123/v1": "Refused: this playground's own address (127.0.0.1:8123)",
    "http://localhost:8123/demo/v1": "Refused: this playground's own address",
}
ALLOWED = [
    "http://127.0.0.1:9000/v1",
    "http://localhost:11434/v1",
    "http://[::1]:9000/v1",
    "http://10.0.0.5/v1",
    "http://192.168.1.20:8080/v1",
    "https://api.example.com/v1",
]


@pytest.fixture
def serving(monkeypatch):
    """This process serves on 127.0.0.1:8123, as Daphne's scope says once a request came in."""
    monkeypatch.setattr(netguard, "listening", {("127.0.0.1", 8123)})


@pytest.fixture
def admin_client(alice):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client = Client()
    client.force_login(alice)
    return client


def add_in_admin(client, workspace, base_url: str):
    form = {
        "workspace": workspace.id,
        "name": "Relay",
        "base_url": base_url,
        "api_key": "sk-x",
        "extra_headers": "{}",
        "enabled": "on",
    }
    return client.post("/admin/playground/provider/add/", form)


def addprovider(base_url: str) -> str:
    out = io.StringIO()
    call_command("addprovider", "Relay", "--base-url", base_url, "--workspace", "acme", stdout=out)
    return out.getvalue()


def test_refused_base_urls_are_refused_by_the_admin_with_the_reason(admin_client, workspace, serving):
    for url, reason in REFUSED.items():
        response = add_in_admin(admin_client, workspace, url)
        assert response.status_code == 200, url
        assert reason in response.content.decode().replace("&#x27;", "'"), url
    assert not Provider.objects.filter(name="Relay").exists()


def test_refused_base_urls_are_refused_by_addprovider_with_the_reason(workspace, serving, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PROVIDER_KEY", "sk-x")
    for url, reason in REFUSED.items():
        with pytest.raises(CommandError, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
            addprovider(url)
    assert not Provider.objects.filter(name="Relay").exists()


def test_loopback_and_private_relays_are_allowed(admin_client, workspace, serving, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PROVIDER_KEY", "sk-x")
    for url in ALLOWED:
        assert "Added provider" in addprovider(url) or "Updated provider" in addprovider(url)
        Provider.objects.filter(name="Relay").delete()
        assert add_in_admin(admin_client, workspace, url).status_code == 302, url
        assert Provider.objects.get(name="Relay").base_url == url
        Provider.objects.filter(name="Relay").delete()


def test_the_switch_allows_link_local_metadata_and_own_addresses_but_never_other_schemes(
    workspace, serving, settings, monkeypatch
):
    monkeypatch.setenv("PLAYGROUND_PROVIDER_KEY", "sk-x")
    settings.ALLOW_PRIVATE_RELAYS = True
    for url, reason in REFUSED.items():
        if reason.startswith("Refused"):
            assert "provider 'Relay'" in addprovider(url), url
        else:
            with pytest.raises(CommandError):
                addprovider(url)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "playground.settings"}
    read = (
        "import django; django.setup(); from django.conf import settings as s; print(s.ALLOW_PRIVATE_RELAYS)"
    )
    for value, expected in [("1", "True"), ("0", "False"), (None, "False")]:
        env.pop("PLAYGROUND_ALLOW_PRIVATE_RELAYS", None)
        if value is not None:
            env["PLAYGROUND_ALLOW_PRIVATE_RELAYS"] = value
        result = subprocess.run(
            [sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.stdout.split()[-1:] == [expected], result.stderr


# ---------------------------------------------------------------------------- at connect time


def resolving(monkeypatch, name: str, *addresses: str):
    """`name` resolves to each of `addresses` in turn (the last one from then on): the
    network edge, as a DNS server that changes its answer would."""
    real, answers = socket.getaddrinfo, list(addresses)

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return real(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def test_a_name_that_resolves_to_a_link_local_address_is_refused_at_connect_time(
    alice_cookie, conversation, provider, fake_relay, monkeypatch
):
    """Saved as a name (allowed), it resolves to the metadata address when the run connects:
    the run fails saying so, and no connection is attempted."""
    provider.base_url = f"http://relay.test:{fake_relay.port}/v1"
    await provider.asave()
    resolving(monkeypatch, "relay.test", "169.254.169.254")
    connected = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(
        socket.socket,
        "connect",
        lambda sock, address: connected.append(address) or real_connect(sock, address),
    )
    status, data = await submit(alice_cookie, conversation, provider, "Hi")
    assert status == 201, data
    run = await wait_for(data["run"]["id"])
    assert run.status == Run.Status.FAILED
    assert run.error_kind == "refused"
    assert "refused: link-local address 169.254.169.254" in run.error_message
    assert "PLAYGROUND_ALLOW_PRIVATE_RELAYS=1" in run.error_message
    assert not [a for a in connected if a[0] == "169.254.169.254"]
    assert fake_relay.requests == []


async def test_a_name_that_changes_its_answer_after_the_check_is_refused_by_the_peer_it_reached(
    alice_cookie, conversation, provider, fake_relay, monkeypatch
):
    """DNS rebinding: harmless when checked, this playground's own address when connecting.
    The peer actually reached is checked before the request (and its key) is sent."""
    monkeypatch.setattr(netguard, "listening", {("127.0.0.1", fake_relay.port)})
    provider.base_url = f"http://relay.test:{fake_relay.port}/v1"
    await provider.asave()
    resolving(monkeypatch, "relay.test", "192.0.2.10", "127.0.0.1")
    status, data = await submit(alice_cookie, conversation, provider, "Hi")
    assert status == 201, data
    run = await wait_for(data["run"]["id"])
    assert run.status == Run.Status.FAILED
    assert run.error_kind == "refused"
    assert "refused: this playground's own address (127.0.0.1:" in run.error_message
    assert fake_relay.requests == []


async def test_the_demo_relay_is_this_server_and_still_answers(
    alice_cookie, conversation, workspace, settings, monkeypatch
):
    """The Demo relay is reached at the playground's own address, which only it may use."""
    demo = await Provider.objects.aget(workspace=workspace, is_demo=True)
    with FakeRelay() as this_server:  # stands in for the playground's own listening socket
        monkeypatch.setattr(netguard, "listening", {("127.0.0.1", this_server.port)})
        settings.DEMO_BASE_URL = this_server.base_url
        status, data = await submit(alice_cookie, conversation, demo, "Hi")
        assert status == 201, data
        run = await wait_for(data["run"]["id"])
        assert run.status == Run.Status.COMPLETED, run.error_message
        assert len(this_server.requests) == 1

        # Saved before the check existed (the form refuses it now): refused when connecting.
        other = await Provider.objects.acreate(
            workspace=workspace, name="Loop", base_url=this_server.base_url
        )
        status, data = await submit(alice_cookie, conversation, other, "Hi")
        assert status == 201, data
        run = await wait_for(data["run"]["id"])
        assert run.error_kind == "refused"
        assert "this playground's own address" in run.error_message
        assert len(this_server.requests) == 1


def test_a_served_playground_refuses_its_own_address_but_its_demo_relay_answers():
    """Through Daphne: the address it serves on is taken from the ASGI scope; the admin then
    refuses it as a base URL, a provider stored with it anyway fails when it connects, and
    the Demo relay (at that address) still answers."""
    with app_database() as env, AppServer(env) as server:
        client = ServerClient(server.url)
        own = f"{server.url}/demo/v1"
        page = client.get("/admin/playground/provider/add/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = {"csrfmiddlewaretoken": token, "workspace": "1", "name": "Loop", "base_url": own}
        form.update({"api_key": "sk-x", "extra_headers": "{}", "enabled": "on"})
        refused = client.session.post(
            f"{server.url}/admin/playground/provider/add/", data=form, headers=client.headers
        )
        assert refused.status_code == 200
        assert "Refused: this playground&#x27;s own address" in refused.text

        # Stored as before the check existed: the form refuses it now.
        store = (
            "from playground.models import Provider, Workspace; "
            "Provider.objects.create(workspace=Workspace.objects.get(slug='default'), "
            f"name='Loop', base_url={own!r})"
        )
        manage(env, "shell", "-c", store)
        page = client.get("/").text
        config = re.search(r'id="playground-config" type="application/json">(.*?)</script>', page).group(1)
        loop = next(p["id"] for p in json.loads(config)["providers"] if p["name"] == "Loop")
        conversation = client.new_conversation()
        runs = {}
        for name, provider in (("demo", client.demo_provider()), ("loop", loop)):
            response = client.submit(conversation, provider, "Hi", model="demo-echo")
            assert response.status_code == 201, response.text
            runs[name] = response.json()["run"]["id"]
            for _ in range(200):
                run = client.get(f"/api/runs/{runs[name]}/").json()
                if run["status"] not in ("queued", "streaming"):
                    break
                time.sleep(0.05)
            runs[name] = run
        assert runs["demo"]["status"] == "completed"
        assert runs["loop"]["status"] == "failed"
        assert runs["loop"]["error"]["kind"] == "refused"
        assert "this playground's own address" in runs["loop"]["error"]["message"]

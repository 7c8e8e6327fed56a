"""The providers page and its JSON API (issue 17, "Providers for owners and admins"):
owners and admins add, edit, rotate the key, set prices, test, enable, disable and delete
providers, each step audited; members and viewers see them, never a key; bad input is a
400 naming the field and stores nothing."""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth.models import User
from django.test import Client

from playground.models import AuditEvent, Conversation, Membership, Provider, Run
from tests.conftest import CANARY_KEY
from tests.fakes import FakeRelay, respond

pytestmark = pytest.mark.django_db

NEW_KEY = "sk-rotated-5d6e7f8091a2b3c4"


def client_for(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def member(workspace, name: str, role: str) -> User:
    user = User.objects.create_user(name, password=f"{name}-password")
    Membership.objects.create(workspace=workspace, user=user, role=role)
    return user


def send(client: Client, method: str, path: str, body: dict | None = None):
    return getattr(client, method)(path, json.dumps(body or {}), content_type="application/json")


@pytest.fixture
def admin(workspace):
    return member(workspace, "adam", Membership.Role.ADMIN)


@pytest.fixture
def viewer(workspace):
    return member(workspace, "vera", Membership.Role.VIEWER)


def actions(workspace) -> list[str]:
    return list(
        AuditEvent.objects.filter(workspace=workspace).order_by("id").values_list("action", flat=True)
    )


def test_an_admin_adds_a_provider_and_the_key_is_stored_encrypted_and_shown_masked(
    admin, workspace, fake_relay
):
    body = {
        "name": "Relay",
        "base_url": fake_relay.base_url,
        "api_key": CANARY_KEY,
        "extra_headers": {"X-Team": "blue"},
        "prices": {"*": {"input": 1, "output": 2}},
    }
    response = send(client_for(admin), "post", "/api/providers/", body)
    assert response.status_code == 201, response.content
    shown = response.json()["provider"]
    assert shown["key_hint"] == "sk-…8a0b"
    assert shown["extra_headers"] == {"X-Team": "blue"}
    assert CANARY_KEY not in response.content.decode()
    assert "api_key" not in json.dumps(shown)
    provider = Provider.objects.get(name="Relay")
    assert provider.get_api_key().reveal() == CANARY_KEY
    assert provider.created_by == admin
    assert actions(workspace) == ["provider.created", "provider.prices_changed"]
    event = AuditEvent.objects.get(action="provider.created")
    assert event.actor == admin
    assert event.target_id == str(provider.id)
    assert CANARY_KEY not in json.dumps(event.details)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "Fake"}, "name"),  # taken in the workspace
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"base_url": "http://169.254.169.254/v1"}, "base_url"),  # cloud metadata: SSRF refused
        ({"base_url": ""}, "base_url"),
        ({"extra_headers": {"Authorization": "Bearer x"}}, "extra_headers"),
        ({"extra_headers": {"Bad Name": "x"}}, "extra_headers"),
        ({"extra_headers": {"X-Split": "a\r\nInjected: 1"}}, "extra_headers"),
        ({"extra_headers": "X-Team: blue"}, "extra_headers"),
        ({"prices": {"gpt-4o": {"input": -1, "output": 2}}}, "prices"),
        ({"prices": {"gpt-4o": {"input": 1}}}, "prices"),
        ({"prices": {"gpt-4o": {"input": "1", "output": 2}}}, "prices"),
        ({"prices": {"": {"input": 1, "output": 2}}}, "prices"),
        ({"prices": [1]}, "prices"),
        ({"enabled": "yes"}, "enabled"),
        ({"api_key": 5}, "api_key"),
        ({"api_key_encrypted": "x"}, "api_key_encrypted"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(
    admin, workspace, provider, fake_relay, change, field
):
    body = {"name": "New", "base_url": fake_relay.base_url, "api_key": "sk-new-key-12345678", **change}
    before = sorted(Provider.objects.values_list("id", "name", "base_url", "prices", "extra_headers"))
    response = send(client_for(admin), "post", "/api/providers/", body)
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"], response.json()
    patched = send(client_for(admin), "patch", f"/api/providers/{provider.id}/", change)
    if field != "name" or change["name"] == "":
        assert patched.status_code == 400, (change, patched.content)
        assert field in patched.json()["fields"]
    assert sorted(Provider.objects.values_list("id", "name", "base_url", "prices", "extra_headers")) == before
    assert not AuditEvent.objects.filter(action__startswith="provider.").exists()


def test_infinite_prices_are_refused(admin, provider):
    raw = '{"prices": {"*": {"input": Infinity, "output": 1}}}'
    response = client_for(admin).patch(f"/api/providers/{provider.id}/", raw, content_type="application/json")
    assert response.status_code == 400
    assert "prices" in response.json()["fields"]


def test_editing_keeps_the_key_unless_one_is_entered_and_audits_what_changed(admin, workspace, provider):
    client = client_for(admin)
    response = send(client, "patch", f"/api/providers/{provider.id}/", {"name": "Renamed", "api_key": ""})
    assert response.status_code == 200, response.content
    provider.refresh_from_db()
    assert provider.name == "Renamed"
    assert provider.get_api_key().reveal() == CANARY_KEY
    assert actions(workspace) == ["provider.changed"]
    assert AuditEvent.objects.get(action="provider.changed").details == {"fields": ["name"]}

    response = send(client, "patch", f"/api/providers/{provider.id}/", {"api_key": NEW_KEY})
    assert response.status_code == 200
    assert response.json()["provider"]["key_hint"] == "sk-…b3c4"
    provider.refresh_from_db()
    assert provider.get_api_key().reveal() == NEW_KEY
    assert actions(workspace)[-1] == "provider.key_changed"
    for event in AuditEvent.objects.all():
        assert NEW_KEY not in json.dumps(event.details)
        assert CANARY_KEY not in json.dumps(event.details)
    assert NEW_KEY not in response.content.decode()


def test_moving_the_base_url_takes_the_key_again(admin, provider):
    client = client_for(admin)
    response = send(
        client, "patch", f"/api/providers/{provider.id}/", {"base_url": "https://elsewhere.example/v1"}
    )
    assert response.status_code == 400
    assert "api_key" in response.json()["fields"]
    provider.refresh_from_db()
    assert provider.base_url != "https://elsewhere.example/v1"
    body = {"base_url": "https://elsewhere.example/v1", "api_key": NEW_KEY}
    assert send(client, "patch", f"/api/providers/{provider.id}/", body).status_code == 200


def test_prices_changes_are_audited_before_and_after(admin, workspace, provider):
    client = client_for(admin)
    first = {"gpt-4o": {"input": 2.5, "output": 10, "cached_input": 1.25}}
    send(client, "patch", f"/api/providers/{provider.id}/", {"prices": first})
    second = {"*": {"input": 1, "output": 1}}
    send(client, "patch", f"/api/providers/{provider.id}/", {"prices": second})
    provider.refresh_from_db()
    assert provider.prices == second
    events = AuditEvent.objects.filter(action="provider.prices_changed").order_by("id")
    assert [e.details for e in events] == [{"before": {}, "after": first}, {"before": first, "after": second}]


def test_enable_and_disable_are_audited_and_a_disabled_provider_leaves_the_picker(
    admin, workspace, provider, bob
):
    client = client_for(admin)
    assert send(client, "patch", f"/api/providers/{provider.id}/", {"enabled": False}).status_code == 200
    assert "Fake (" not in client_for(bob).get("/").content.decode()
    assert send(client, "patch", f"/api/providers/{provider.id}/", {"enabled": True}).status_code == 200
    assert actions(workspace) == ["provider.disabled", "provider.enabled"]


def test_deleting_a_provider_keeps_its_runs_in_the_ledger(admin, alice, workspace, provider):
    conversation = Conversation.objects.create(workspace=workspace, creator=alice)
    run = Run.objects.create(
        conversation=conversation, workspace=workspace, user=alice, provider=provider,
        provider_name=provider.name, model="fake-model", status="completed",
    )  # fmt: skip
    response = send(client_for(admin), "delete", f"/api/providers/{provider.id}/")
    assert response.status_code == 200
    assert response.json() == {"deleted": provider.id, "runs_kept": 1}
    assert not Provider.objects.filter(id=provider.id).exists()
    run.refresh_from_db()
    assert run.provider_id is None
    assert run.provider_name == "Fake"
    event = AuditEvent.objects.get(action="provider.deleted")
    assert event.target_name == "Fake"
    assert event.details["runs_kept"] == 1


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_read_the_list_but_never_manage_nor_see_headers(workspace, provider, role):
    provider.extra_headers = {"X-Team": "blue"}
    provider.save()
    client = client_for(member(workspace, "someone", role))
    listing = client.get("/api/providers/")
    assert listing.status_code == 200
    rows = {p["name"]: p for p in listing.json()["providers"]}
    assert rows["Fake"]["key_hint"] == "sk-…8a0b"
    assert rows["Fake"]["base_url"] == provider.base_url
    assert "extra_headers" not in rows["Fake"]
    assert listing.json()["manage"] is False
    assert client.get(f"/api/providers/{provider.id}/").status_code == 200
    for method, path, body in (
        ("post", "/api/providers/", {"name": "X", "base_url": "https://x.example/v1"}),
        ("patch", f"/api/providers/{provider.id}/", {"name": "Mine"}),
        ("delete", f"/api/providers/{provider.id}/", None),
        ("post", f"/api/providers/{provider.id}/test/", None),
    ):
        refused = send(client, method, path, body)
        assert refused.status_code == 403, (method, path)
        assert refused.json()["error"] == "Only owners and admins manage providers."
    provider.refresh_from_db()
    assert provider.name == "Fake"
    page = client.get("/providers/").content.decode()
    assert "Only owners and admins manage providers." in page
    assert "Add provider" not in page
    for text in (listing.content.decode(), page):
        assert CANARY_KEY not in text
        assert CANARY_KEY[3:] not in text
        assert provider.api_key_encrypted not in text


def test_another_workspace_sees_nothing(charlie, provider):
    client = client_for(charlie)
    assert client.get(f"/api/providers/{provider.id}/").status_code == 404
    assert send(client, "patch", f"/api/providers/{provider.id}/", {"name": "x"}).status_code == 404
    assert send(client, "post", f"/api/providers/{provider.id}/test/").status_code == 404
    assert "Fake" not in client.get("/api/providers/").content.decode()


def test_logged_out_is_a_401(provider):
    assert Client().get("/api/providers/").status_code == 401
    assert Client().get("/providers/").status_code == 302


def test_test_connection_answers_in_words(admin, provider, fake_relay):
    client = client_for(admin)
    answer = send(client, "post", f"/api/providers/{provider.id}/test/").json()
    assert answer == {
        "ok": True,
        "message": "Connected: 2 models (fake-large, fake-model)",
        "models": ["fake-large", "fake-model"],
    }
    assert fake_relay.requests[-1].path == "/v1/models"
    assert fake_relay.requests[-1].headers["Authorization"] == f"Bearer {CANARY_KEY}"

    many = {"data": [{"id": f"m{i:02}"} for i in range(12)]}
    fake_relay.script(respond(200, many))
    answer = send(client, "post", f"/api/providers/{provider.id}/test/").json()
    assert answer["message"] == "Connected: 12 models (m00, m01, m02, m03, m04, …)"

    fake_relay.script(respond(401, {"error": {"message": f"Incorrect API key provided: {CANARY_KEY}"}}))
    response = send(client, "post", f"/api/providers/{provider.id}/test/")
    assert response.json()["ok"] is False
    assert response.json()["message"].startswith("The relay refused the key (401).")
    assert CANARY_KEY not in response.content.decode()
    assert CANARY_KEY[3:] not in response.content.decode()


def test_test_connection_says_when_it_cannot_connect(admin, workspace):
    relay = FakeRelay()
    base_url = relay.base_url
    relay.close()
    provider = Provider(workspace=workspace, name="Gone", base_url=base_url)
    provider.set_api_key(CANARY_KEY)
    provider.save()
    answer = send(client_for(admin), "post", f"/api/providers/{provider.id}/test/").json()
    assert answer["ok"] is False
    assert answer["message"].startswith("Could not connect: ")


def test_test_connection_refuses_a_metadata_address_even_when_stored(admin, workspace):
    provider = Provider(workspace=workspace, name="Sneaky", base_url="http://169.254.169.254/v1")
    provider.set_api_key(CANARY_KEY)
    provider.save()  # saved around the validator, as a raw row would be
    answer = send(client_for(admin), "post", f"/api/providers/{provider.id}/test/").json()
    assert answer["ok"] is False
    assert answer["message"].startswith("Could not connect: ")
    assert "link-local" in answer["message"]


def test_the_demo_provider_tests_without_a_network_call_and_keeps_its_key(admin, workspace):
    demo = Provider.objects.get(workspace=workspace, is_demo=True)
    client = client_for(admin)
    assert (
        send(client, "post", f"/api/providers/{demo.id}/test/")
        .json()["message"]
        .startswith("Connected: 2 models")
    )
    refused = send(client, "patch", f"/api/providers/{demo.id}/", {"api_key": NEW_KEY})
    assert refused.status_code == 400
    assert "api_key" in refused.json()["fields"]
    assert (
        send(
            client, "patch", f"/api/providers/{demo.id}/", {"prices": {"*": {"input": 0, "output": 0}}}
        ).status_code
        == 200
    )


def test_the_page_and_every_answer_keep_the_key_out_of_bodies_headers_and_logs(
    admin, workspace, provider, caplog
):
    caplog.set_level(logging.DEBUG)
    client = client_for(admin)
    answers = [
        client.get("/providers/"),
        client.get("/api/providers/"),
        client.get(f"/api/providers/{provider.id}/"),
        send(client, "patch", f"/api/providers/{provider.id}/", {"name": "Fake", "api_key": NEW_KEY}),
        send(client, "post", f"/api/providers/{provider.id}/test/"),
        send(
            client, "post", "/api/providers/", {"name": "Bad", "base_url": "ftp://x", "api_key": CANARY_KEY}
        ),
    ]
    answers.append(client.get("/providers/"))
    provider.refresh_from_db()
    page = answers[-1].content.decode()
    assert 'type="password"' in page
    assert "sk-\\u2026b3c4" in page  # the mask, in the page's JSON
    for response in answers:
        shown = response.content.decode() + json.dumps(dict(response.headers))
        for secret in (CANARY_KEY, CANARY_KEY[3:], NEW_KEY, NEW_KEY[3:], provider.api_key_encrypted):
            assert secret not in shown
    for secret in (CANARY_KEY, NEW_KEY):
        assert secret not in caplog.text


def test_a_name_taken_meanwhile_is_a_400_not_a_500(admin, provider, fake_relay, monkeypatch):
    from playground.views.providers import ProviderInput

    # As if another request took the name between the form's check and the save.
    monkeypatch.setattr(ProviderInput, "clean_name", lambda form: form.cleaned_data["name"])
    body = {"name": "Fake", "base_url": fake_relay.base_url, "api_key": NEW_KEY}
    response = send(client_for(admin), "post", "/api/providers/", body)
    assert response.status_code == 400
    assert "name" in response.json()["fields"]
    assert Provider.objects.filter(name="Fake").count() == 1
    assert not AuditEvent.objects.exists()

"""Presets: saved panels, personal or shared, validated like a run."""

import json

import pytest
from django.test import Client

from playground.models import Membership, Preset

URL = "/api/presets/"
PRESET = {
    "name": "Terse JSON",
    "shared": False,
    "model": "fake-model",
    "system": "Answer in JSON.",
    "params": {"temperature": 0.2, "stop": ["END"], "response_format": {"type": "json_object"}},
    "extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
}


def call(client, method, url, data=None):
    return getattr(client, method)(url, json.dumps(data or {}), content_type="application/json")


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def as_bob(bob):
    return client_for(bob)


def names(client):
    return sorted(p["name"] for p in client.get(URL).json()["presets"])


def test_a_preset_round_trips_the_panel(as_alice, provider):
    created = call(as_alice, "post", URL, {**PRESET, "provider": provider.id})
    assert created.status_code == 201, created.json()
    listed = as_alice.get(URL).json()["presets"]
    assert len(listed) == 1
    got = listed[0]
    assert {k: got[k] for k in PRESET} == PRESET
    assert (got["provider"], got["mine"], got["owner"]) == (provider.id, True, "alice")


def test_bad_fields_are_named_and_nothing_is_saved(as_alice, charlie):
    bad = {"name": " ", "params": {"temperature": 5, "top_logprobs": 30}, "extra_body": {"model": "x"}}
    response = call(as_alice, "post", URL, {**bad, "provider": 999})
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"name", "temperature", "top_logprobs", "extra_body", "provider"}
    assert "between 0 and 2" in response.json()["fields"]["temperature"]
    assert not Preset.objects.exists()


def test_a_name_clash_asks_before_overwriting(as_alice):
    assert call(as_alice, "post", URL, PRESET).status_code == 201
    clash = call(as_alice, "post", URL, {**PRESET, "model": "other"})
    assert clash.status_code == 409
    assert "Overwrite" in clash.json()["error"]
    assert Preset.objects.get().model == "fake-model"
    assert call(as_alice, "post", URL, {**PRESET, "model": "other", "overwrite": True}).status_code == 200
    assert Preset.objects.get().model == "other"


def test_shared_presets_are_seen_by_the_workspace_only(as_alice, as_bob, charlie):
    call(as_alice, "post", URL, {**PRESET, "name": "mine only"})
    shared = call(as_alice, "post", URL, {**PRESET, "name": "for all", "shared": True}).json()
    assert names(as_alice) == ["for all", "mine only"]
    assert names(as_bob) == ["for all"]
    as_charlie = client_for(charlie)
    assert names(as_charlie) == []
    assert call(as_charlie, "delete", f"{URL}{shared['id']}/").status_code == 404
    assert call(as_bob, "patch", f"{URL}{shared['id']}/", {"name": "bob's now"}).status_code == 403
    assert call(as_bob, "delete", f"{URL}{shared['id']}/").status_code == 403
    private = Preset.objects.get(name="mine only")
    assert call(as_bob, "delete", f"{URL}{private.id}/").status_code == 404


def test_owners_and_admins_may_remove_others_shared_presets(as_alice, as_bob):
    shared = call(as_bob, "post", URL, {**PRESET, "shared": True}).json()
    assert call(as_alice, "patch", f"{URL}{shared['id']}/", {"model": "x"}).status_code == 403
    assert call(as_alice, "patch", f"{URL}{shared['id']}/", {"shared": False}).status_code == 200
    assert names(as_alice) == []
    assert names(as_bob) == ["Terse JSON"]


def test_the_owner_renames_and_deletes(as_alice):
    preset = call(as_alice, "post", URL, PRESET).json()
    renamed = call(as_alice, "patch", f"{URL}{preset['id']}/", {"name": "Renamed", "params": {"seed": 3}})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["params"]) == ("Renamed", {"seed": 3})
    bad = call(as_alice, "patch", f"{URL}{preset['id']}/", {"params": {"n": 0}})
    assert bad.status_code == 400
    assert "n" in bad.json()["fields"]
    assert call(as_alice, "delete", f"{URL}{preset['id']}/").status_code == 200
    assert names(as_alice) == []


def test_viewers_keep_personal_presets_but_cannot_share(bob):
    Membership.objects.filter(user=bob).update(role=Membership.Role.VIEWER)
    viewer = client_for(bob)
    refused = call(viewer, "post", URL, {**PRESET, "shared": True})
    assert refused.status_code == 400
    assert "shared" in refused.json()["fields"]
    assert call(viewer, "post", URL, PRESET).status_code == 201

"""Issue 15 §4: bad input gets a 400 (413, 415) that names the field, never a 500, and stores nothing."""

import json

import pytest

from playground.models import Conversation, Message, Run


@pytest.fixture
def conversation(alice, workspace):
    return Conversation.objects.create(workspace=workspace, creator=alice, title="Tides")


def rows():
    return (Run.objects.count(), Message.objects.count(), Conversation.objects.count())


def submit(client, conversation, raw, content_type="application/json"):
    return client.generic(
        "POST", f"/api/conversations/{conversation.id}/runs/", raw, content_type=content_type
    )


def refused(client, conversation, raw, status, field, content_type="application/json"):
    before = rows()
    response = submit(client, conversation, raw, content_type)
    assert response.status_code == status, response.content[:300]
    assert field in response.json()["fields"]
    assert rows() == before


def body(provider_row, **changes):
    return json.dumps({"provider": provider_row.id, "model": "fake-model", "message": "hi", **changes})


def test_nul_bytes_and_lone_surrogates_are_refused_naming_the_field(as_alice, conversation, provider):
    refused(as_alice, conversation, body(provider, message="a\u0000b"), 400, "message")
    refused(
        as_alice,
        conversation,
        body(provider, message=[{"type": "text", "text": "\ud800"}]),
        400,
        "message[0].text",
    )


def test_a_model_name_over_the_limit_is_refused(as_alice, conversation, provider):
    refused(as_alice, conversation, body(provider, model="m" * 256), 400, "model")


def test_json_nested_too_deep_is_refused_before_parsing(as_alice, conversation, provider):
    refused(as_alice, conversation, "[" * 100000, 400, "body")
    refused(
        as_alice, conversation, body(provider, extra_body={"x": json.loads("[" * 70 + "]" * 70)}), 400, "body"
    )


def test_bodies_over_the_size_limit_get_413(as_alice, conversation, provider, settings):
    settings.PLAYGROUND_MAX_BODY_BYTES = 1000
    refused(as_alice, conversation, body(provider, message="x" * 2000), 413, "body")


def test_types_are_checked_and_booleans_are_not_integers(as_alice, conversation, provider):
    refused(as_alice, conversation, body(provider, provider=True), 400, "provider")
    refused(as_alice, conversation, body(provider, provider=10**20), 400, "provider")
    refused(
        as_alice,
        conversation,
        body(provider, message=[{"type": "image_url", "image_url": 5}]),
        400,
        "message[0].image_url",
    )
    refused(as_alice, conversation, body(provider, **{"continue": "yes"}), 400, "continue")


def test_form_bodies_on_json_endpoints_get_415(as_alice, conversation, provider):
    refused(as_alice, conversation, "a=1", 415, "body", content_type="application/x-www-form-urlencoded")


def test_huge_ids_in_urls_are_404_json(as_alice):
    response = as_alice.get(f"/api/runs/{10**30}/")
    assert response.status_code == 404
    assert response.json()["error"]


def test_djangos_own_error_pages_under_api_answer_json(as_alice):
    missing = as_alice.get("/api/no-such-endpoint/")
    assert (missing.status_code, missing["Content-Type"]) == (404, "application/json")
    wrong_method = as_alice.get("/api/conversations/import/")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["allowed"] == "POST"

"""One message validator: submit, add and edit a turn, import an export and import a
pasted request refuse the same bad message with the same words, under their own field
names, and store nothing."""

import json

import pytest

from playground.models import Conversation, Message, Run
from playground.validation import NAME_MAX, clean_message
from playground.validation.messages import CONTENT_SHAPE, NEEDS_CALL_ID

NO_URL = 'needs a URL: {"url": "https://…" or "data:…"}'
TOO_LONG = f"must be text of at most {NAME_MAX} characters"
BAD_IMAGE = [{"type": "image_url", "image_url": {"detail": "low"}}]


def rows():
    return (Conversation.objects.count(), Message.objects.count(), Run.objects.count())


def send(client, method, url, data):
    before = rows()
    response = client.generic(method, url, json.dumps(data), content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert rows() == before
    return response.json()


def via_submit(client, conversation, provider, message):
    """The submission carries a message's content only."""
    body = {"provider": provider.id, "model": "m", "message": message["content"]}
    fields = send(client, "POST", f"/api/conversations/{conversation.id}/runs/", body)["fields"]
    return {k.replace("message", "content", 1): v for k, v in fields.items()}


def via_add_turn(client, conversation, provider, message):
    return send(client, "POST", f"/api/conversations/{conversation.id}/messages/", message)["fields"]


def via_edit_turn(client, conversation, provider, message):
    stored = Message.objects.create(conversation=conversation, position=1, role=message["role"], content="x")
    if message["role"] == "tool":
        Message.objects.filter(id=stored.id).update(tool_call_id="call_1")
    return send(client, "PATCH", f"/api/messages/{stored.id}/", message)["fields"]


def via_import(client, conversation, provider, message):
    fields = send(client, "POST", "/api/conversations/import/", {"messages": [message]})["fields"]
    return {k.removeprefix("messages[0]."): v for k, v in fields.items()}


def via_import_request(client, conversation, provider, message):
    answer = send(client, "POST", "/api/import/", {"text": json.dumps({"model": "m", "messages": [message]})})
    assert list(answer["fields"]) == ["text"]
    assert answer["fields"]["text"] == answer["error"]
    field, _, why = answer["error"].partition(": ")
    return {field.removeprefix("messages[0]."): why}


WHOLE_MESSAGE = [via_add_turn, via_edit_turn, via_import, via_import_request]


@pytest.mark.parametrize("path", [via_submit, *WHOLE_MESSAGE])
def test_a_content_part_without_a_url(as_alice, conversation, provider, path):
    message = {"role": "user", "content": BAD_IMAGE}
    assert path(as_alice, conversation, provider, message) == {"content[0].image_url": NO_URL}


@pytest.mark.parametrize("path", [via_submit, via_add_turn, via_edit_turn, via_import])
def test_content_that_is_neither_text_nor_parts(as_alice, conversation, provider, path):
    # A pasted request is read leniently: such content becomes its JSON text.
    message = {"role": "user", "content": []}
    assert path(as_alice, conversation, provider, message) == {"content": CONTENT_SHAPE}


@pytest.mark.parametrize("path", WHOLE_MESSAGE)
def test_a_tool_call_id_too_long(as_alice, conversation, provider, path):
    message = {"role": "tool", "content": "21°C", "tool_call_id": "c" * (NAME_MAX + 1)}
    assert path(as_alice, conversation, provider, message) == {"tool_call_id": TOO_LONG}


@pytest.mark.parametrize("path", [via_add_turn, via_import, via_import_request])
def test_a_tool_result_without_its_call_id(as_alice, conversation, provider, path):
    message = {"role": "tool", "content": "21°C"}
    assert path(as_alice, conversation, provider, message) == {"tool_call_id": NEEDS_CALL_ID}


@pytest.mark.parametrize("path", WHOLE_MESSAGE)
def test_tool_calls_on_a_user_message(as_alice, conversation, provider, path):
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    message = {"role": "user", "content": "hi", "tool_calls": calls}
    assert path(as_alice, conversation, provider, message) == {
        "tool_calls": "only assistant messages carry tool calls"
    }


def test_the_fields_kept_are_the_wire_fields():
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        "reasoning_content": "thought",
    }
    assert clean_message(message) == {
        "role": "assistant",
        "content": "",
        "tool_calls": message["tool_calls"],
        "reasoning": "thought",
    }
    edit = clean_message({"role": "user", "name": "ann"}, partial=True)
    assert edit == {"role": "user", "name": "ann"}  # content not given: left as stored

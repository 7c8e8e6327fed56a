"""Editing a conversation by hand, picking a choice, forking; output and tool-schema checks."""

import json

import pytest
from django.test import Client

from playground.models import Conversation, Message, Run
from playground.schema_verdicts import check_json, output_checks, schema_problem
from playground.validation import Invalid, clean_params


@pytest.fixture
def conversation(alice, workspace):
    conv = Conversation.objects.create(workspace=workspace, creator=alice, title="Tides")
    for position, (role, text) in enumerate([("user", "one"), ("assistant", "two"), ("user", "three")], 1):
        Message.objects.create(conversation=conv, position=position, role=role, content=text)
    return conv


def post(client, url, data=None, method="post"):
    return getattr(client, method)(url, json.dumps(data or {}), content_type="application/json")


def wire(conv):
    return [(m["role"], m["content"]) for m in Conversation.objects.get(id=conv.id).history()]


def test_add_a_turn_of_each_role(as_alice, conversation):
    url = f"/api/conversations/{conversation.id}/messages/"
    assert post(as_alice, url, {"role": "assistant", "content": "four"}).status_code == 200
    parts = [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
    ]
    assert post(as_alice, url, {"role": "user", "content": parts}).status_code == 200
    response = post(as_alice, url, {"role": "tool", "content": "21°C", "tool_call_id": "call_1"})
    assert response.status_code == 200
    assert wire(conversation)[-3:] == [("assistant", "four"), ("user", parts), ("tool", "21°C")]
    assert Conversation.objects.get(id=conversation.id).history()[-1]["tool_call_id"] == "call_1"


def test_a_bad_turn_names_the_field(as_alice, conversation):
    url = f"/api/conversations/{conversation.id}/messages/"
    response = post(as_alice, url, {"role": "robot", "content": "x"})
    assert response.status_code == 400
    assert "role" in response.json()["fields"]
    response = post(as_alice, url, {"role": "tool", "content": "x"})
    assert response.status_code == 400
    assert "tool_call_id" in response.json()["fields"]
    response = post(as_alice, url, {"role": "user", "content": [{"type": "audio"}]})
    assert response.status_code == 400
    assert "content[0]" in response.json()["fields"]
    assert len(wire(conversation)) == 3


def test_edit_delete_and_move(as_alice, conversation):
    first, second, third = conversation.messages.order_by("position")
    assert post(as_alice, f"/api/messages/{second.id}/", {"content": "TWO"}, "patch").status_code == 200
    assert wire(conversation) == [("user", "one"), ("assistant", "TWO"), ("user", "three")]
    assert post(as_alice, f"/api/messages/{third.id}/move/", {"direction": "up"}).status_code == 200
    assert wire(conversation) == [("user", "one"), ("user", "three"), ("assistant", "TWO")]
    response = post(as_alice, f"/api/messages/{first.id}/move/", {"direction": "up"})
    assert response.status_code == 400
    assert "top" in response.json()["error"]
    assert as_alice.delete(f"/api/messages/{first.id}/").status_code == 200
    assert wire(conversation) == [("user", "three"), ("assistant", "TWO")]


def test_no_edits_while_an_answer_streams(as_alice, conversation, provider, alice):
    Run.objects.create(
        conversation=conversation, user=alice, provider=provider, model="m", status="streaming"
    )
    response = post(
        as_alice, f"/api/conversations/{conversation.id}/messages/", {"role": "user", "content": "x"}
    )
    assert response.status_code == 409


def test_pick_one_of_n_choices_and_hide_an_answer(as_alice, conversation, provider, alice):
    run = Run.objects.create(
        conversation=conversation, user=alice, provider=provider, model="m", status="completed", position=4
    )
    choices = [
        Message.objects.create(
            conversation=conversation,
            position=4,
            role="assistant",
            content=f"choice {i}",
            run=run,
            choice_index=i,
            in_history=i == 0,
        )  # fmt: skip
        for i in range(3)
    ]
    assert wire(conversation)[-1] == ("assistant", "choice 0")
    assert post(as_alice, f"/api/messages/{choices[2].id}/choose/").status_code == 200
    assert wire(conversation)[-1] == ("assistant", "choice 2")
    # Deleting the chosen one hands the turn to another choice.
    assert as_alice.delete(f"/api/messages/{choices[2].id}/").status_code == 200
    assert wire(conversation)[-1] == ("assistant", "choice 0")
    # Hiding the answer removes it from the transcript, not from the ledger.
    assert post(as_alice, f"/api/runs/{run.id}/hide/").status_code == 200
    transcript = as_alice.get(f"/api/conversations/{conversation.id}/").json()
    assert transcript["runs"] == []
    assert Run.objects.filter(id=run.id).exists()
    assert wire(conversation)[-1] == ("user", "three")


def test_fork_keeps_turns_up_to_a_message(as_alice, conversation):
    second = conversation.messages.get(position=2)
    response = post(as_alice, f"/api/conversations/{conversation.id}/fork/", {"message": second.id})
    assert response.status_code == 201
    fork = Conversation.objects.get(id=response.json()["id"])
    assert fork.title == "Tides (fork)"
    assert wire(fork) == [("user", "one"), ("assistant", "two")]
    assert len(wire(conversation)) == 3


def test_strangers_cannot_edit(charlie, conversation):
    client = Client()
    client.force_login(charlie)
    message = conversation.messages.first()
    assert client.delete(f"/api/messages/{message.id}/").status_code == 404
    assert (
        post(client, f"/api/conversations/{conversation.id}/messages/", {"role": "user"}).status_code == 404
    )
    assert Message.objects.filter(id=message.id).exists()


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "array", "items": {"type": "integer"}}},
    "required": ["city", "days"],
}


def test_schema_verdicts():
    assert check_json('{"city": "Oslo", "days": [1, 2]}', SCHEMA) == {"valid": True, "errors": []}
    verdict = check_json('{"days": [1, "two"]}', SCHEMA)
    assert not verdict["valid"]
    assert verdict["errors"] == [
        "$: 'city' is a required property",
        "$.days[1]: 'two' is not of type 'integer'",
    ]
    assert check_json("not json", None)["errors"][0].startswith("not valid JSON")
    fenced = check_json('```json\n{"city": "Oslo"}\n```', None)
    assert fenced == {"valid": False, "errors": ["the JSON is wrapped in a Markdown code fence"]}


def test_output_checks_follow_the_response_format():
    choices = [{"index": 0, "content": '{"city": "Oslo", "days": []}'}, {"index": 1, "content": "{}"}]
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}}
    verdicts = output_checks(body, choices)
    assert [v["valid"] for v in verdicts] == [True, False]
    assert output_checks({"response_format": {"type": "json_object"}}, choices)[1]["valid"] is True
    assert output_checks({}, choices) is None


def test_tools_and_schemas_are_checked_as_json_schema():
    assert schema_problem({"type": "object"}) is None
    assert "not a valid JSON Schema" in schema_problem({"type": "objekt"})
    bad_tool = [{"type": "function", "function": {"name": "f", "parameters": {"type": 12}}}]
    with pytest.raises(Invalid) as caught:
        clean_params({"tools": bad_tool})
    assert "tools" in caught.value.errors
    assert "f" in caught.value.errors["tools"]
    bad_format = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"required": "city"}}}
    with pytest.raises(Invalid) as caught:
        clean_params({"response_format": bad_format})
    assert "response_format" in caught.value.errors

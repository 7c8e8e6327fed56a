"""Export a conversation as JSON (the exact wire message list) and Markdown; import it back."""

import base64
import json
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from playground.exports import EXPORT_KEY, FORMAT
from playground.models import Conversation, Membership, Message, Provider, Run

IMAGE_BYTES = bytes(range(256)) * 48  # 12 KB
DATA_URL = "data:image/png;base64," + base64.b64encode(IMAGE_BYTES).decode()
USER_PARTS = [
    {"type": "text", "text": "Compare these two cities."},
    {"type": "image_url", "image_url": {"url": "https://example.com/map.png", "detail": "low"}},
    {"type": "image_url", "image_url": {"url": DATA_URL}},
]
CALLS = [
    {
        "id": f"call_{c}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
    }
    for c, city in (("a", "Paris"), ("b", "Lyon"))
]
PARAMS = {"temperature": 0.7, "n": 2, "seed": 7, "stream": True, "stream_options": {"include_usage": True}}
EXTRA = {"chat_template_kwargs": {"enable_thinking": False}}


def post(client, url, data):
    return client.post(url, json.dumps(data), content_type="application/json")


def choice(index, content, finish_reason, tool_calls=None):
    return {
        "index": index,
        "content": content,
        "reasoning": "",
        "tool_calls": tool_calls,
        "finish_reason": finish_reason,
    }


def make_run(conv, user, position, body, **fields):
    demo = Provider.objects.get(workspace=conv.workspace, is_demo=True)
    submitted = timezone.now()
    return Run.objects.create(
        conversation=conv,
        user=user,
        provider=demo,
        provider_name=demo.name,
        model="demo-echo",
        request_body={"model": "demo-echo", "messages": conv.history(), **body},
        request_headers={"Authorization": "Bearer …", "Content-Type": "application/json"},
        status="completed",
        position=position,
        submitted_at=submitted,
        first_token_at=submitted + timedelta(milliseconds=250),
        finished_at=submitted + timedelta(seconds=1),
        **fields,
    )


@pytest.fixture
def conversation(alice, workspace, as_alice):
    """System, user with image parts, parallel tool calls and their results, an n=2 answer
    whose second choice was picked, and a later answer that was hidden."""
    conv = Conversation.objects.create(workspace=workspace, creator=alice, title="Weather check: Paris/Lyon")
    add = Message.objects.create
    add(conversation=conv, position=0, role="system", content="Be brief.")
    add(conversation=conv, position=1, role="user", content=USER_PARTS, name="alice")
    calls = make_run(
        conv, alice, 2, {"temperature": 0.2},
        output=[choice(0, "", "tool_calls", CALLS)],
        finish_reasons=["tool_calls"], prompt_tokens=20, completion_tokens=10, total_tokens=30,
    )  # fmt: skip
    add(
        conversation=conv, position=2, role="assistant", content="", tool_calls=CALLS,
        reasoning="I should check both cities.", run=calls,
    )  # fmt: skip
    add(conversation=conv, position=3, role="tool", content="21°C", tool_call_id="call_a", name="get_weather")
    add(conversation=conv, position=4, role="tool", content="24°C", tool_call_id="call_b")
    add(conversation=conv, position=5, role="user", content="Which is warmer?")
    output = [choice(0, "Paris is warmer.", "stop"), choice(1, "Lyon is warmer.", "length")]
    pair = make_run(
        conv, alice, 6, {**PARAMS, **EXTRA}, output=output, finish_reasons=["stop", "length"],
        prompt_tokens=40, completion_tokens=8, total_tokens=48, usage_estimated=True,
    )  # fmt: skip
    choices = [
        add(
            conversation=conv,
            position=6,
            role="assistant",
            content=c["content"],
            run=pair,
            choice_index=c["index"],
            in_history=c["index"] == 0,
        )  # fmt: skip
        for c in output
    ]
    assert post(as_alice, f"/api/messages/{choices[1].id}/choose/", {}).status_code == 200
    hidden = make_run(conv, alice, 7, {"temperature": 1.9, "max_tokens": 5})
    add(conversation=conv, position=7, role="assistant", content="HIDDEN ANSWER", run=hidden)
    assert post(as_alice, f"/api/runs/{hidden.id}/hide/", {}).status_code == 200
    return conv


EXPECTED_MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": USER_PARTS, "name": "alice"},
    {"role": "assistant", "content": "", "tool_calls": CALLS},
    {"role": "tool", "content": "21°C", "name": "get_weather", "tool_call_id": "call_a"},
    {"role": "tool", "content": "24°C", "tool_call_id": "call_b"},
    {"role": "user", "content": "Which is warmer?"},
    {"role": "assistant", "content": "Lyon is warmer."},
]


def export(client, conv, kind="json"):
    response = client.get(f"/api/conversations/{conv.id}/export.{kind}")
    assert response.status_code == 200, response.content
    return response


def test_the_json_export_is_the_exact_history_plus_the_last_shown_runs_parameters(as_alice, conversation):
    response = export(as_alice, conversation)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="weather-check-parislyon.json"'
    document = json.loads(response.content)
    assert document["messages"] == EXPECTED_MESSAGES == conversation.history()
    # The hidden run came last, but the parameters are the n=2 run's, the body's extra keys included.
    assert {k: v for k, v in document.items() if k not in ("messages", EXPORT_KEY)} == {
        "model": "demo-echo",
        **PARAMS,
        **EXTRA,
    }
    meta = document[EXPORT_KEY]
    assert (meta["format"], meta["version"], meta["title"]) == (FORMAT, 1, "Weather check: Paris/Lyon")
    assert meta["provider"] == "Demo"
    assert meta["reasoning"] == {"2": "I should check both cities."}
    assert abs(datetime.fromisoformat(meta["exported_at"]) - timezone.now()) < timedelta(hours=1)
    text = response.content.decode()
    assert "HIDDEN ANSWER" not in text
    assert "Paris is warmer." not in text
    assert "Authorization" not in text
    assert "Bearer" not in text
    demo_key = Provider.objects.get(workspace=conversation.workspace, is_demo=True).get_api_key().reveal()
    assert demo_key.startswith("demo-")
    assert demo_key not in text


def test_export_import_export_gives_the_same_messages(as_alice, conversation, alice):
    first = json.loads(export(as_alice, conversation).content)
    response = post(as_alice, "/api/conversations/import/", first)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["messages"] == 7
    assert (data["model"], data["system"]) == ("demo-echo", "Be brief.")
    assert (data["params"], data["extra_body"], data["skipped"]) == (PARAMS, EXTRA, {})
    imported = Conversation.objects.get(id=data["conversation"]["id"])
    assert imported.id != conversation.id
    assert (imported.title, imported.creator, imported.workspace) == (
        "Weather check: Paris/Lyon",
        alice,
        conversation.workspace,
    )
    # Every message is a turn (the last user message is not split off to the composer),
    # the system prompt where the System prompt box reads it, reasoning kept.
    stored = list(imported.messages.values_list("position", "role", "reasoning"))
    assert stored == [
        (0, "system", ""),
        (1, "user", ""),
        (2, "assistant", "I should check both cities."),
        (3, "tool", ""),
        (4, "tool", ""),
        (5, "user", ""),
        (6, "assistant", ""),
    ]
    second = json.loads(export(as_alice, imported).content)
    assert second["messages"] == first["messages"] == EXPECTED_MESSAGES
    assert second[EXPORT_KEY]["reasoning"] == first[EXPORT_KEY]["reasoning"]
    assert second[EXPORT_KEY]["title"] == first[EXPORT_KEY]["title"]

    # The file's text, as the page's file input sends it, imports the same way.
    response = post(as_alice, "/api/conversations/import/", {"text": json.dumps(first)})
    assert response.status_code == 201, response.content
    again = Conversation.objects.get(id=response.json()["conversation"]["id"])
    assert again.history() == EXPECTED_MESSAGES


def test_the_markdown_export_reads_as_a_transcript(as_alice, conversation):
    response = export(as_alice, conversation, "md")
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="weather-check-parislyon.md"'
    text = response.content.decode()
    head = "# Weather check: Paris/Lyon\n\n## System\n\nBe brief.\n\n"
    assert text.startswith(head + "## User (name `alice`)\n")
    assert "![image](<https://example.com/map.png>)" in text
    assert "[uploaded image, 12 KB]" in text
    assert DATA_URL[40:80] not in text  # the upload is summarised, not dumped
    assert "> **Reasoning**\n>\n> I should check both cities." in text
    assert '**Tool call** `get_weather` (id `call_a`)\n\n```json\n{\n  "city": "Paris"\n}\n```' in text
    assert '**Tool call** `get_weather` (id `call_b`)\n\n```json\n{\n  "city": "Lyon"\n}\n```' in text
    footer = "*demo-echo via Demo · finish_reason: tool_calls · 20 prompt + 10 completion = 30 tokens · "
    assert footer in text
    assert "## Tool result (name `get_weather`, for call `call_a`)\n\n21°C" in text
    assert "## Tool result (for call `call_b`)\n\n24°C" in text
    # Only the chosen choice, with its own finish reason; nothing of the hidden run.
    assert "Lyon is warmer.\n\n*demo-echo via Demo · finish_reason: length · " in text
    assert "40 prompt + 8 completion = 48 tokens (estimated) · first token 250 ms*" in text
    assert "Paris is warmer." not in text
    assert "HIDDEN ANSWER" not in text
    assert text.count("## Assistant") == 2
    order = ["## System", "## User", "**Reasoning**", "call_a", "24°C", "Which is warmer?", "Lyon is warmer."]
    assert [text.index(marker) for marker in order] == sorted(text.index(marker) for marker in order)


def test_markdown_fences_outlast_backticks_in_arguments(as_alice, alice, workspace):
    conv = Conversation.objects.create(workspace=workspace, creator=alice, title="日本語のタイトル")
    call = {"id": "c1", "type": "function", "function": {"name": "run", "arguments": "```not json"}}
    Message.objects.create(conversation=conv, position=1, role="assistant", content="", tool_calls=[call])
    response = export(as_alice, conv, "md")
    assert "````\n```not json\n````" in response.content.decode()
    assert "filename*=utf-8''%E6%97%A5%E6%9C%AC" in response["Content-Disposition"]


def test_outsiders_get_404_and_viewers_cannot_import(charlie, bob, conversation):
    client = Client()
    client.force_login(charlie)
    for kind in ("json", "md"):
        response = client.get(f"/api/conversations/{conversation.id}/export.{kind}")
        assert response.status_code == 404
        assert "Be brief" not in response.content.decode()
    assert Client().get(f"/api/conversations/{conversation.id}/export.json").status_code == 401

    Membership.objects.filter(user=bob).update(role=Membership.Role.VIEWER)
    client.force_login(bob)
    assert export(client, conversation).status_code == 200  # viewers may read and export
    before = Conversation.objects.count()
    response = post(client, "/api/conversations/import/", {"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 403
    assert Conversation.objects.count() == before


def test_each_bad_message_is_named_by_its_field(as_alice):
    before = Conversation.objects.count()
    messages = [
        {"role": "user", "content": "fine"},
        {"role": "tool", "content": "21°C"},
        {"role": "robot", "content": "beep"},
        {"role": "user", "content": [{"type": "audio", "audio": "…"}]},
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
        {"role": "user", "content": 42},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"detail": "low"}}]},
        {"role": "user", "content": "x", "refusal": "no"},
        {"role": "user"},
    ]
    response = post(as_alice, "/api/conversations/import/", {"model": "m", "messages": messages})
    assert response.status_code == 400
    assert response.json()["fields"] == {
        "messages[1].tool_call_id": "a tool result needs the id of the tool call it answers",
        "messages[2].role": "must be one of system, user, assistant, tool",
        "messages[3].content[0]": "each content part needs a type of text, image_url or video_url",
        "messages[4].tool_calls[0].function.arguments": "must be a string of JSON, as on the wire",
        "messages[5].content": "must be text or a non-empty list of content parts",
        "messages[6].content[0].image_url": 'needs a URL: {"url": "https://…" or "data:…"}',
        "messages[7].refusal": "is not a message field the playground keeps; remove it",
        "messages[8].content": "is missing",
    }
    assert response.json()["error"].startswith("messages[1].tool_call_id: a tool result needs")
    assert response.json()["error"].endswith("; and 3 more")
    assert Conversation.objects.count() == before


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({"text": "# Weather check\n\n## User"}, "text", "This is not a conversation export."),
        ({"text": '{"model": "m"}'}, "text", "This is not a conversation export. The body has no messages"),
        ({"messages": []}, "messages", "is empty"),
        ({"messages": "hi"}, "messages", "must be a list"),
        (
            {"messages": [{"role": "user", "content": "x"}], EXPORT_KEY: {"format": FORMAT, "version": 2}},
            f"{EXPORT_KEY}.version",
            "is 2: the file comes from a newer playground",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], EXPORT_KEY: {"reasoning": {"0": "thought"}}},
            f"{EXPORT_KEY}.reasoning.0",
            "does not belong to an assistant message",
        ),
    ],
)
def test_unreadable_files_are_refused_with_the_reason(as_alice, payload, field, reason):
    response = post(as_alice, "/api/conversations/import/", payload)
    assert response.status_code == 400
    assert response.json()["fields"][field].startswith(reason)


def test_a_plain_chat_body_imports_every_message_as_a_turn(as_alice):
    body = {
        "model": "qwen-plus",
        "temperature": 5,
        "messages": [
            {"role": "user", "content": "What is 2+2? Use the tool."},
            {"role": "assistant", "content": None, "reasoning_content": "Call add.", "tool_calls": CALLS[:1]},
            {"role": "tool", "tool_call_id": "call_a", "content": "4"},
            {"role": "user", "content": "Thanks!"},
        ],
    }
    response = post(as_alice, "/api/conversations/import/", body)
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["model"], data["system"], data["params"]) == ("qwen-plus", "", {})
    assert data["skipped"] == {"temperature": "must be between 0 and 2"}
    conv = Conversation.objects.get(id=data["conversation"]["id"])
    assert conv.title == "What is 2+2? Use the tool."
    assert [m["role"] for m in conv.history()] == ["user", "assistant", "tool", "user"]
    assert conv.history()[1] == {"role": "assistant", "content": "", "tool_calls": CALLS[:1]}
    assert conv.history()[-1] == {"role": "user", "content": "Thanks!"}
    assert conv.messages.get(position=2).reasoning == "Call add."


def test_the_json_export_also_imports_as_a_request(as_alice, conversation):
    """Pasted into "Import request": the wire fields load; the metadata is not a parameter."""
    text = export(as_alice, conversation).content.decode()
    response = post(as_alice, "/api/import/", {"text": text})
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["model"], data["system"], data["message"]) == ("demo-echo", "Be brief.", "")
    assert data["params"] == PARAMS
    # Until forms.split_body skips it, the metadata key lands in the extra body; nothing else does.
    assert data["extra_body"] == EXTRA
    imported = Conversation.objects.get(id=data["conversation"]["id"])
    assert imported.history() == EXPECTED_MESSAGES


def test_big_exports_import_up_to_the_import_limit(as_alice, settings):
    """A conversation with uploads outgrows Django's 2.5 MB request body limit; imports allow more."""
    photo = "data:image/jpeg;base64," + base64.b64encode(bytes(3 * 1024 * 1024)).decode()
    parts = [{"type": "image_url", "image_url": {"url": photo}}]
    body = {"messages": [{"role": "user", "content": parts}]}
    assert len(json.dumps(body)) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = post(as_alice, "/api/conversations/import/", body)
    assert response.status_code == 201, response.content[:200]
    conv = Conversation.objects.get(id=response.json()["conversation"]["id"])
    assert conv.history() == body["messages"]
    assert "[uploaded image, 3.0 MB]" in export(as_alice, conv, "md").content.decode()

    settings.PLAYGROUND_IMPORT_MAX_BYTES = 1024 * 1024
    response = post(as_alice, "/api/conversations/import/", body)
    assert response.status_code == 413
    assert response.json()["fields"]["body"] == "is 4.0 MB; at most 1 MB is accepted here"

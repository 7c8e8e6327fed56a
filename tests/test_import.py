"""Import a request: every example body in the five seed pages, pasted as JSON or as its
curl command, loads into the playground and runs against a relay that behaves as the page says."""

import json
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from playground.models import Message
from playground.snippets import UnreadableRequest, parse_request
from tests.test_relay import post, session_cookie, wait_for

SEEDS = Path(__file__).resolve().parent / "data" / "seeds"


def seed_examples() -> list[tuple[str, str]]:
    """(seed file, pasted text) for each JSON example body and each curl command."""
    found = []
    for path in sorted(SEEDS.glob("0*.txt")):
        lines = path.read_text().splitlines()
        for start, line in enumerate(lines):
            if line.strip() == "{" or line.lstrip().startswith("curl "):
                text = first_parse(lines[start:])
                if text:
                    found.append((path.name, text))
    return found


def first_parse(lines: list[str]) -> str | None:
    for end in range(1, min(len(lines), 80) + 1):
        text = "\n".join(lines[:end])
        try:
            parse_request(text)
            return text
        except UnreadableRequest:
            continue
    return None


EXAMPLES = seed_examples()


def test_the_seed_pages_hold_the_examples_we_expect():
    per_seed = {name: sum(1 for n, _ in EXAMPLES if n == name) for name, _ in EXAMPLES}
    assert per_seed == {
        "000_9e12dad207f181e0.txt": 2,  # the JSON example and its curl
        "001_73143d7868f991b3.txt": 2,
        "002_7a31a6b58b31bf6d.txt": 1,  # the curl template with placeholders
        "003_9619391b3c5b8f7e.txt": 1,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("seed", "text"), EXAMPLES, ids=[f"{n[:3]}-{i}" for i, (n, _) in enumerate(EXAMPLES)]
)
async def test_each_seed_example_imports_and_runs(seed, text, alice, workspace, provider, fake_relay):
    cookie = await sync_to_async(session_cookie)(alice)
    status, imported = await post(cookie, "/api/import/", {"text": text})
    assert status == 201, imported
    body = json.loads(parse_request(text)["body"] and json.dumps(parse_request(text)["body"]))
    assert imported["model"] == body["model"]
    conversation = imported["conversation"]["id"]
    payload = {
        "provider": provider.id,
        "model": imported["model"],
        "system": imported["system"],
        "message": imported["message"],
        "params": imported["params"],
        "extra_body": imported["extra_body"],
    }
    status, submitted = await post(cookie, f"/api/conversations/{conversation}/runs/", payload)
    assert status == 201, submitted
    run = await wait_for(submitted["run"]["id"])
    assert run.status == "completed"
    sent = fake_relay.requests[-1].body
    assert sent["model"] == body["model"]
    assert sent["messages"][-1]["content"] == imported["message"]
    for name, value in imported["params"].items():
        assert sent[name] == value


@pytest.mark.django_db
def test_an_import_fills_the_fields_and_keeps_earlier_turns(alice, workspace):
    body = {
        "model": "Qwen2-7B-Instruct",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "你是谁?"},
        ],
        "temperature": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 99,
        "n": {},
    }
    client = Client()
    client.force_login(alice)
    data = client.post("/api/import/", {"text": json.dumps(body)}, content_type="application/json").json()
    assert (data["model"], data["system"], data["message"]) == (
        "Qwen2-7B-Instruct",
        "You are a helpful assistant.",
        "你是谁?",
    )
    assert data["params"] == {"temperature": 1.0, "stream": True, "stream_options": {"include_usage": True}}
    assert data["extra_body"] == {"max_completion_tokens": 99}
    assert data["skipped"] == {"n": "was a placeholder ({}), left unset"}
    stored = Message.objects.filter(conversation_id=data["conversation"]["id"]).values_list(
        "position", "role", "content"
    )
    assert list(stored) == [
        (0, "system", "You are a helpful assistant."),
        (1, "user", "Hi"),
        (2, "assistant", "Hello!"),
    ]


@pytest.mark.django_db
def test_an_unreadable_paste_is_refused_with_the_reason(alice, workspace):
    client = Client()
    client.force_login(alice)
    response = client.post("/api/import/", {"text": "{oops"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["fields"]["text"].startswith("The JSON does not parse")

"""View code: the snippets send what the playground sent; pasted requests load back."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from django.test import Client

from playground.models import Conversation, Run
from playground.snippets import UnreadableRequest, code_for, parse_request
from tests.conftest import CANARY_KEY

BODY = {
    "model": "fake-model",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "你好, \"quotes\" and 'apostrophes' $HOME `x`"}],
        },
    ],
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 50,
    "stop": ["\n\n", "END"],
    "seed": 42,
    "logit_bias": {"1024": -100},
    "repetition_penalty": 1.1,
    "top_k": 40,
    "separate_reasoning": True,
    "stream": True,
    "stream_options": {"include_usage": True},
}
HEADERS = {
    "Authorization": "Bearer sk-…8a0b",
    "Content-Type": "application/json",
    "X-Forwarded-Host": "api.example",
}


def run_snippet(kind: str, code: str) -> None:
    env = {**os.environ, "OPENAI_API_KEY": CANARY_KEY}
    if kind == "curl":
        command = ["bash", "-c", code]
    elif kind == "javascript":
        command = ["node", "--input-type=module", "-e", code]
    else:
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", ["curl", "python", "openai", "javascript"])
def test_each_snippet_sends_the_same_body_and_headers(kind, fake_relay):
    if kind == "javascript" and not shutil.which("node"):
        pytest.fail("node is needed to run the JavaScript snippet")
    run_snippet(kind, code_for(fake_relay.base_url, BODY, HEADERS)[kind])
    sent = fake_relay.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body == BODY
    headers = {name.lower(): value for name, value in sent.headers.items()}
    assert headers["authorization"] == f"Bearer {CANARY_KEY}"
    assert headers["x-forwarded-host"] == "api.example"


def test_no_snippet_holds_the_key():
    for code in code_for("https://relay.example/v1", BODY, HEADERS).values():
        assert "sk-" not in code
        assert "OPENAI_API_KEY" in code


@pytest.mark.django_db
def test_the_run_detail_offers_code_for_what_was_sent(alice, workspace, provider, fake_relay):
    conversation = Conversation.objects.create(workspace=workspace, creator=alice)
    run = Run.objects.create(
        conversation=conversation, provider=provider, provider_name="Fake", model="fake-model",
        base_url=fake_relay.base_url, request_body=BODY, request_headers=HEADERS, status="completed",
    )  # fmt: skip
    client = Client()
    client.force_login(alice)
    detail = client.get(f"/api/runs/{run.id}/").json()
    run_snippet("python", detail["code"]["python"])
    assert fake_relay.requests[-1].body == BODY


def test_a_json_body_imports():
    assert parse_request(json.dumps(BODY)) == {"body": BODY, "url": None, "headers": {}}


def test_a_curl_command_imports_without_its_key():
    code = code_for("https://relay.example/v1", BODY, HEADERS)["curl"].replace("$OPENAI_API_KEY", "sk-pasted")
    parsed = parse_request(code)
    assert parsed["body"] == BODY
    assert parsed["url"] == "https://relay.example/v1/chat/completions"
    assert parsed["headers"] == {"Content-Type": "application/json", "X-Forwarded-Host": "api.example"}


@pytest.mark.parametrize(
    "text", ["", "hello", "{not json", '{"model": "m"}', "curl https://x/v1/chat/completions"]
)
def test_what_cannot_import_says_why(text):
    with pytest.raises(UnreadableRequest):
        parse_request(text)

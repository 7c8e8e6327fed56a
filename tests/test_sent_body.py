"""What goes on the wire: the View code snippets of a real run send exactly the body the
playground sent, and parameters the user did not set are never sent."""

import json
import shutil

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from playground.models import Conversation
from tests.test_relay import post, session_cookie, wait_for
from tests.test_snippets import run_snippet

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "array", "items": {"type": "integer"}}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city — “quoted”, 'single', $HOME and `ticks`",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
EVERYTHING = {
    "temperature": 0.7,
    "top_p": 0.9,
    "n": 2,
    "max_tokens": 64,
    "stop": ["\n\n", "END", "'\"$`"],
    "presence_penalty": -0.5,
    "frequency_penalty": 1.5,
    "repetition_penalty": 1.1,
    "top_k": 40,
    "min_p": 0.05,
    "seed": 1234567890123,
    "user": "tester é 你好",
    "stream": True,
    "stream_options": {"include_usage": True},
    "logit_bias": {"50256": -100, "1024": 6.5},
    "logprobs": True,
    "top_logprobs": 3,
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "trip", "strict": True, "schema": SCHEMA},
    },
    "separate_reasoning": True,
    "enable_thinking": False,
}
MESSAGE = "Line one\nline \"two\" with 'quotes', $HOME, `ticks`, \\backslash, emoji 🌊 and 你好"


async def run_through_playground(
    user, workspace, provider, relay, params, extra=None, system="Be terse.\nOK?"
):
    """Submit like the page does; the body the relay received, and the stored run."""
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=user)
    cookie = await sync_to_async(session_cookie)(user)
    payload = {
        "provider": provider.id,
        "model": "fake-model",
        "system": system,
        "message": MESSAGE,
        "params": params,
        "extra_body": extra or {},
    }
    status, data = await post(cookie, f"/api/conversations/{conversation.id}/runs/", payload)
    assert status == 201, data
    run = await wait_for(data["run"]["id"])
    assert run.status == "completed", run.error_message
    return relay.requests[-1].body, run


def same_json(a, b) -> bool:
    """Equal as JSON, keys in the same order at every level."""
    return json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)


@pytest.mark.django_db(transaction=True)
async def test_the_snippets_send_what_the_playground_sent(alice, workspace, provider, fake_relay):
    extra = {"chat_template_kwargs": {"enable_thinking": False}, "x_trace": "né"}
    sent, run = await run_through_playground(alice, workspace, provider, fake_relay, EVERYTHING, extra)
    assert sent == run.request_body
    assert sent["messages"][-1]["content"] == MESSAGE
    client = Client()
    await sync_to_async(client.force_login)(alice)
    code = (await sync_to_async(client.get)(f"/api/runs/{run.id}/")).json()["code"]
    kinds = ["curl", "python", "javascript"]
    if shutil.which("node") is None:
        pytest.fail("node is needed to run the JavaScript snippet")
    try:
        import openai  # noqa: F401

        kinds.append("openai")
    except ImportError:
        pytest.fail("the openai package (test extra) is needed to run the SDK snippet")
    for kind in kinds:
        before = len(fake_relay.requests)
        await sync_to_async(run_snippet)(kind, code[kind])
        assert len(fake_relay.requests) == before + 1, kind
        replayed = fake_relay.requests[-1]
        assert replayed.path == "/v1/chat/completions", kind
        if kind in ("curl", "python"):
            assert same_json(replayed.body, sent), kind
        else:
            # The SDK writes its own fields first; JavaScript objects put integer-like keys
            # (logit_bias token ids) first. The same JSON, in another key order.
            assert replayed.body == sent, kind


@pytest.mark.django_db(transaction=True)
async def test_parameters_the_user_did_not_set_are_not_sent(alice, workspace, provider, fake_relay):
    # What the page sends untouched: stream (a checkbox that starts ticked), nothing else.
    sent, _ = await run_through_playground(
        alice, workspace, provider, fake_relay, {"stream": True}, system=""
    )
    assert list(sent) == ["model", "messages", "stream", "stream_options"]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": MESSAGE}]

    # Not streaming: not even stream_options.
    sent, _ = await run_through_playground(alice, workspace, provider, fake_relay, {}, system="")
    assert list(sent) == ["model", "messages"]

    # A few set: exactly those, with the values given (include_usage turned off stays off).
    chosen = {"temperature": 0, "stop": "END", "stream": True, "stream_options": {"include_usage": False}}
    sent, _ = await run_through_playground(alice, workspace, provider, fake_relay, chosen, system="")
    assert {k: v for k, v in sent.items() if k not in ("model", "messages")} == chosen

"""The built-in Demo relay speaks the chat completions protocol as the seed relays do."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from playground.models import Provider
from playground.tokens import split_tokens
from playground.upstream import Accumulator

pytestmark = pytest.mark.django_db(transaction=True)
DEMO_KEY = object()  # post()'s default: the Demo provider's own key


@pytest.fixture(autouse=True)
def demo_provider(workspace):
    """The workspace fixture makes the Demo provider, whose key the relay accepts."""
    return workspace.providers.get(is_demo=True)


def demo_key() -> str:
    key = Provider.objects.get(is_demo=True).get_api_key()
    return key.reveal() if hasattr(key, "reveal") else key


async def post(body: dict, key=DEMO_KEY, client: AsyncClient | None = None):
    key = await sync_to_async(demo_key)() if key is DEMO_KEY else key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await (client or AsyncClient()).post(
        "/demo/v1/chat/completions", json.dumps(body), content_type="application/json", headers=headers
    )


async def events(response) -> list:
    text = b"".join([piece async for piece in response.streaming_content]).decode()
    assert text.endswith("data: [DONE]\n\n")
    return [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]


def fold(chunks) -> Accumulator:
    acc = Accumulator()
    for c in chunks:
        acc.apply(c)
    return acc


def ask(text: str, **params) -> dict:
    return {"model": "demo-echo", "messages": [{"role": "user", "content": text}], **params}


async def test_echo_streams_the_last_user_message_token_by_token():
    chunks = await events(await post(ask("Hello there, world!", stream=True, tokens_per_second=0)))
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert contents == ["", "Hello", " there", ",", " world", "!", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_usage_comes_last_only_when_asked():
    with_usage = await events(
        await post(ask("a b c", stream=True, tokens_per_second=0, stream_options={"include_usage": True}))
    )
    without = await events(await post(ask("a b c", stream=True, tokens_per_second=0)))
    assert with_usage[-1]["choices"] == []
    assert with_usage[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert all("usage" not in c for c in without)


async def test_lorem_is_as_long_as_max_tokens_and_cut_there():
    body = {
        "model": "demo-lorem",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 25,
        "seed": 3,
    }
    data = (await post(body)).json()
    assert len(split_tokens(data["choices"][0]["message"]["content"])) == 25
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 25


async def test_lorem_is_deterministic_per_seed():
    body = {"model": "demo-lorem", "messages": [{"role": "user", "content": "x"}], "max_tokens": 30}
    first, again = (await post({**body, "seed": 1})).json(), (await post({**body, "seed": 1})).json()
    other = (await post({**body, "seed": 2})).json()
    assert first["choices"] == again["choices"]
    assert first["choices"] != other["choices"]


async def test_n_gives_that_many_choices_by_index():
    body = {
        "model": "demo-lorem",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "n": 3,
        "stream": True,
        "tokens_per_second": 0,
    }
    acc = fold(await events(await post(body)))
    assert sorted(acc.choices) == [0, 1, 2]
    assert len({"".join(c.content) for c in acc.choices.values()}) == 3


async def test_stop_ends_the_answer_before_the_stop_sequence():
    data = (await post(ask("one two three four", stop=[" three"]))).json()
    assert data["choices"][0]["message"]["content"] == "one two"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 2


async def test_an_unknown_model_is_a_404_in_the_openai_shape():
    response = await post({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_a_missing_key_is_a_401():
    assert (await post(ask("x"), key="")).status_code == 401


async def test_the_models_endpoint_lists_both_models():
    data = (await AsyncClient().get("/demo/v1/models")).json()
    assert [m["id"] for m in data["data"]] == ["demo-echo", "demo-lorem"]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
                "required": ["city", "days"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


async def test_logprobs_are_well_formed_per_token():
    data = (await post(ask("one two", logprobs=True, top_logprobs=3))).json()
    entries = data["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in entries] == ["one", " two"]
    for entry in entries:
        assert entry["logprob"] <= 0
        assert entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["token"] == entry["token"]


async def test_a_required_tool_choice_streams_a_tool_call_in_fragments():
    chunks = await events(
        await post(ask("hi", tools=TOOLS, tool_choice="required", stream=True, tokens_per_second=0))
    )
    fragments = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert len(fragments) > 2
    acc = fold(chunks)
    call = acc.choices[0].state()["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("call_demo_0", "get_weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "demo", "days": 1}
    assert acc.choices[0].finish_reason == "tool_calls"


async def test_a_named_tool_choice_calls_that_function():
    body = ask("hi", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    message = (await post(body)).json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"] == {"name": "get_time", "arguments": "{}"}
    assert message["content"] is None


async def test_auto_calls_a_tool_only_when_the_message_names_it():
    named = (await post(ask("please get_time now", tools=TOOLS))).json()["choices"][0]
    plain = (await post(ask("hello", tools=TOOLS))).json()["choices"][0]
    refused = (await post(ask("get_time", tools=TOOLS, tool_choice="none"))).json()["choices"][0]
    assert named["finish_reason"] == "tool_calls"
    assert (plain["finish_reason"], plain["message"]["content"]) == ("stop", "hello")
    assert refused["message"]["content"] == "get_time"


async def test_json_object_answers_parse():
    content = (await post(ask("x y", response_format={"type": "json_object"}))).json()["choices"][0]
    assert json.loads(content["message"]["content"]) == {"answer": "x y"}


async def test_json_schema_answers_fit_the_schema():
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            "score": {"type": "number", "minimum": 0.5},
            "ok": {"type": ["boolean", "null"]},
        },
        "required": ["name", "tags", "score", "ok"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "card", "schema": schema, "strict": True}}
    content = (await post(ask("x", response_format=fmt))).json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema)


async def test_separate_reasoning_comes_first_and_apart():
    chunks = await events(await post(ask("why", separate_reasoning=True, stream=True, tokens_per_second=0)))
    kinds = [
        next(iter(c["choices"][0]["delta"])) for c in chunks if c["choices"] and c["choices"][0]["delta"]
    ]
    assert kinds[1] == "reasoning_content"
    assert kinds[-1] == "content"
    acc = fold(chunks)
    assert "".join(acc.choices[0].content) == "why"
    assert "".join(acc.choices[0].reasoning).startswith("The user wrote 1 tokens")


async def test_thinking_can_be_turned_off():
    message = (await post(ask("why", enable_thinking=False))).json()["choices"][0]["message"]
    assert "reasoning_content" not in message


async def test_usage_counts_every_streamed_token():
    body = ask(
        "a b",
        separate_reasoning=True,
        stream=True,
        tokens_per_second=0,
        stream_options={"include_usage": True},
    )
    chunks = await events(await post(body))
    deltas = [c for c in chunks if c["choices"] and (c["choices"][0]["delta"].keys() - {"role"})]
    deltas = [
        c for c in deltas if any(c["choices"][0]["delta"].get(k) for k in ("content", "reasoning_content"))
    ]
    assert chunks[-1]["usage"]["completion_tokens"] == len(deltas)


async def test_issue15_3_demo_anonymous_random_key_is_a_401():
    response = await post(ask("x"), key="demo-" + "x" * 22)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert (await post(ask("x"), key="")).status_code == 401


async def test_issue15_3_demo_the_demo_providers_key_is_answered():
    response = await post(ask("Hello"))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello"


async def test_issue15_3_demo_a_logged_in_session_is_answered(alice):
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await post(ask("Hello"), key="", client=client)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello"


async def test_issue15_3_demo_n_times_max_tokens_over_the_cap_is_a_400(settings):
    settings.DEMO_MAX_TOKENS = 1000
    lorem = {"model": "demo-lorem", "messages": [{"role": "user", "content": "x"}]}
    response = await post({**lorem, "n": 32, "max_tokens": 20000})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
    assert "1000" in response.json()["error"]["message"]
    assert (await post({**lorem, "n": 6})).json()["error"]["param"] == "n"  # 6 × 200 lorem tokens
    assert (await post({**lorem, "n": 10, "max_tokens": 100})).status_code == 200


async def test_issue15_3_demo_turned_off_is_a_404(settings):
    settings.DEMO_ENABLED = False
    assert (await post(ask("x"))).status_code == 404
    assert (await AsyncClient().get("/demo/v1/models")).status_code == 404

"""The built-in Demo relay speaks the chat completions protocol as the seed relays do."""

import json

import pytest
from django.test import AsyncClient

from playground.tokens import split_tokens
from playground.upstream import Accumulator

pytestmark = pytest.mark.django_db


async def post(body: dict, key: str = "demo-key"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await AsyncClient().post(
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

"""Cost per run, from the provider's prices (USD per 1M tokens)."""

import socket
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError

from playground.models import Conversation, Provider, cost_of, validate_prices
from tests.test_relay import post, session_cookie, wait_for

PRICES = {"gpt-4o": {"input": 2.5, "output": 10, "cached_input": 1.25}, "*": {"input": 1, "output": 2}}


def test_cost_uses_the_model_price_else_the_wildcard():
    assert cost_of(PRICES, "gpt-4o", 1000, 500, None) == Decimal("0.0075")
    assert cost_of(PRICES, "gpt-4o", 1000, 500, 400) == Decimal("0.007")  # 600 * 2.5 + 400 * 1.25 + 500 * 10
    assert cost_of(PRICES, "other", 1000, 500, 400) == Decimal("0.002")  # no cached price: all input
    assert cost_of({}, "gpt-4o", 1000, 500, None) is None
    assert cost_of(PRICES, "gpt-4o", None, None, None) is None


@pytest.mark.parametrize(
    "prices",
    [
        [],
        {"m": 1},
        {"m": {"input": 1}},
        {"m": {"input": 1, "output": -1}},
        {"m": {"input": 1, "output": 2, "x": 3}},
    ],
)
def test_bad_prices_are_refused(prices):
    with pytest.raises(ValidationError):
        validate_prices(prices)


@pytest.mark.django_db(transaction=True)
async def test_a_run_records_its_cost_from_reported_usage(alice, workspace, provider, fake_relay):
    provider.prices = {"fake-model": {"input": 1000, "output": 2000}}
    await provider.asave()
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice)
    cookie = await sync_to_async(session_cookie)(alice)
    payload = {"provider": provider.id, "model": "fake-model", "message": "Hi", "params": {"stream": True}}
    status, data = await post(cookie, f"/api/conversations/{conversation.id}/runs/", payload)
    assert status == 201, data
    run = await wait_for(data["run"]["id"])
    # The fake relay reports 7 prompt tokens and one completion token per word of its reply.
    words = len(fake_relay.reply.split())
    assert (run.prompt_tokens, run.completion_tokens) == (7, words)
    assert run.cost_usd == Decimal(7 * 1000 + words * 2000) / 1_000_000
    assert (await sync_to_async(run.to_dict)())["cost"] == {"usd": float(run.cost_usd), "estimated": False}


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "base_url",
    [lambda: f"http://127.0.0.1:{closed_port()}/v1", lambda: "http://relay.example.invalid/v1"],
    ids=["connection-refused", "unresolvable-host"],
)
@pytest.mark.django_db(transaction=True)
async def test_a_run_that_never_reached_the_relay_records_no_tokens_and_no_cost(alice, workspace, base_url):
    provider = Provider(workspace=workspace, name="Unreachable", base_url=base_url(), prices=PRICES)
    provider.set_api_key("sk-unreachable")
    await provider.asave()
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice)
    cookie = await sync_to_async(session_cookie)(alice)
    payload = {"provider": provider.id, "model": "gpt-4o", "message": "Hi there", "params": {"stream": True}}
    status, data = await post(cookie, f"/api/conversations/{conversation.id}/runs/", payload)
    assert status == 201, data
    run = await wait_for(data["run"]["id"])
    assert (run.status, run.error_kind) == ("failed", "connect")
    assert (run.prompt_tokens, run.completion_tokens, run.total_tokens) == (None, None, None)
    assert (run.cost_usd, run.usage_estimated) == (None, False)
    assert (await sync_to_async(run.to_dict)())["cost"] is None

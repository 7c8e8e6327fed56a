"""Capability profiles: the Probe learns what a relay does with each parameter, and runs
say what was set but not sent, and what was sent but is known to be ignored."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from playground.capabilities import apply_profile, probe
from playground.models import Conversation, Message, Provider
from playground.relay import Target
from tests.conftest import CANARY_KEY
from tests.fakes import chunk, respond, sse
from tests.test_relay import post, session_cookie, wait_for

WORDS = "alpha beta gamma delta epsilon zeta eta theta"


def picky(relay):
    """A relay that honours stop and max_tokens, puts reasoning in `reasoning` when
    enable_thinking asks, rejects top_k, and ignores n, logprobs, seed, tools,
    response_format and include_usage."""

    def handle(h):
        body = h.received.body or {}
        if "top_k" in body:
            respond(400, {"error": {"message": "Unrecognized request argument supplied: top_k"}})(h)
            return
        words = [w if i == 0 else " " + w for i, w in enumerate(WORDS.split())]
        finish = "stop"
        if body.get("stop"):
            cut = [s.strip() for s in body["stop"]]
            words = words[: next((i for i, w in enumerate(words) if w.strip() in cut), len(words))]
        if body.get("max_tokens") and body["max_tokens"] < len(words):
            words, finish = words[: body["max_tokens"]], "length"
        thought = "Let me think." if body.get("enable_thinking") else None
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(words)}
            if thought:
                message["reasoning"] = thought
            usage = {"prompt_tokens": 9, "completion_tokens": len(words), "total_tokens": 9 + len(words)}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            respond(200, {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})(h)
            return
        events = [chunk("", role="assistant")]
        if thought:
            events.append(chunk(reasoning=thought, reasoning_field="reasoning"))
        events += [chunk(w) for w in words] + [chunk(finish=finish)]
        sse(events)(h)

    relay.default = handle
    return relay


def statuses(profile):
    return {name: entry["status"] for name, entry in profile["parameters"].items()}


def test_the_probe_tells_honoured_from_ignored_and_rejected(fake_relay):
    picky(fake_relay)
    profile = probe(Target(fake_relay.base_url, CANARY_KEY), "fake-model")
    found = statuses(profile)
    assert found == {
        "stream": "honoured",
        "stream_options": "ignored",
        "max_tokens": "honoured",
        "n": "ignored",
        "stop": "honoured",
        "logprobs": "ignored",
        "top_logprobs": "ignored",
        "seed": "accepted",  # the same words every time, with or without a seed
        "tools": "ignored",
        "tool_choice": "ignored",
        "response_format": "ignored",
        "separate_reasoning": "ignored",
        "enable_thinking": "honoured",
        "temperature": "accepted",
        "top_p": "accepted",
        "presence_penalty": "accepted",
        "frequency_penalty": "accepted",
        "repetition_penalty": "accepted",
        "top_k": "rejected",
        "min_p": "accepted",
        "user": "accepted",
        "logit_bias": "accepted",
    }
    assert "Unrecognized request argument supplied: top_k" in profile["parameters"]["top_k"]["note"]
    assert profile["reasoning_field"] == "reasoning"
    assert profile["streams_usage"] is False
    assert profile["model"] == "fake-model"
    # One small request per feature (seed takes four); none carries the key anywhere but its header.
    assert 20 <= len(fake_relay.requests) <= 30
    assert all(CANARY_KEY not in json.dumps(r.body) for r in fake_relay.requests)


def test_a_relay_that_does_everything_is_seen_to(fake_relay):
    """The seed-like default relay: echoes, honours n and include_usage."""
    fake_relay.reply = WORDS
    profile = probe(Target(fake_relay.base_url, CANARY_KEY), "fake-model")
    found = statuses(profile)
    assert found["n"] == "honoured"
    assert found["stream_options"] == "honoured"
    assert profile["streams_usage"] is True
    assert found["stop"] == "ignored"  # the default fake relay does not cut at stop
    assert profile["reasoning_field"] is None


def test_a_plain_request_that_fails_stops_the_probe_with_the_reason(fake_relay):
    from playground.capabilities import ProbeFailed

    fake_relay.script(respond(401, {"error": {"message": "Invalid API key provided"}}))
    with pytest.raises(ProbeFailed, match="Invalid API key"):
        probe(Target(fake_relay.base_url, CANARY_KEY), "fake-model")


PROFILE = {
    "probed_at": "2026-11-22T10:00:00+00:00",
    "parameters": {
        "top_k": {"status": "rejected", "note": "HTTP 400: Unrecognized request argument supplied: top_k"},
        "n": {"status": "ignored", "note": "answered, but did not give 2 choices"},
        "temperature": {"status": "accepted", "note": ""},
    },
}


def test_a_profile_notes_what_is_ignored_and_can_leave_out_what_is_rejected():
    params = {"top_k": 40, "n": 2, "temperature": 0.3, "seed": 1}
    sent, notes = apply_profile(PROFILE, params, {})
    assert sent == params
    assert set(notes) == {"ignored"}
    assert set(notes["ignored"]) == {"top_k", "n"}
    assert "rejected" in notes["ignored"]["top_k"]
    assert "ignored" in notes["ignored"]["n"]

    sent, notes = apply_profile({**PROFILE, "omit_rejected": True}, params, {"seed": 7})
    assert sent == {"n": 2, "temperature": 0.3, "seed": 1}
    assert "rejects it" in notes["unsent"]["top_k"]
    assert notes["unsent"]["seed"] == "replaced by the extra body's value"
    assert apply_profile({}, {"top_k": 1}, {}) == ({"top_k": 1}, {})


@pytest.mark.django_db(transaction=True)
async def test_a_run_records_its_notes_and_leaves_out_rejected_parameters(
    alice, workspace, provider, fake_relay
):
    provider.capabilities = {**PROFILE, "omit_rejected": True}
    await provider.asave()
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice)
    cookie = await sync_to_async(session_cookie)(alice)
    payload = {
        "provider": provider.id,
        "model": "fake-model",
        "message": "Hi",
        "params": {"top_k": 40, "n": 2, "stream": True},
    }
    status, data = await post(cookie, f"/api/conversations/{conversation.id}/runs/", payload)
    assert status == 201, data
    run = await wait_for(data["run"]["id"])
    sent = fake_relay.requests[-1].body
    assert "top_k" not in sent
    assert sent["n"] == 2
    assert run.request_body == sent
    assert set(run.param_notes["unsent"]) == {"top_k"}
    assert set(run.param_notes["ignored"]) == {"n"}


@pytest.mark.django_db(transaction=True)
async def test_reasoning_goes_back_only_when_asked_in_the_profile_field(
    alice, workspace, provider, fake_relay
):
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice)
    await Message.objects.acreate(conversation=conversation, position=1, role="user", content="Hi")
    await Message.objects.acreate(
        conversation=conversation, position=2, role="assistant", content="Hello", reasoning="Greet back."
    )
    cookie = await sync_to_async(session_cookie)(alice)
    url = f"/api/conversations/{conversation.id}/runs/"
    sent = []
    for profile, send_back in (({}, False), ({}, True), ({"reasoning_field": "reasoning"}, True)):
        provider.capabilities = profile
        await provider.asave()
        payload = {
            "provider": provider.id,
            "model": "fake-model",
            "message": "And?",
            "send_reasoning": send_back,
        }
        status, data = await post(cookie, url, payload)
        assert status == 201, data
        await wait_for(data["run"]["id"])
        sent.append(fake_relay.requests[-1].body["messages"][1])
    assert sent[0] == {"role": "assistant", "content": "Hello"}
    assert sent[1] == {"role": "assistant", "content": "Hello", "reasoning_content": "Greet back."}
    assert sent[2] == {"role": "assistant", "content": "Hello", "reasoning": "Greet back."}


@pytest.mark.django_db
def test_probe_and_profile_endpoints_check_roles(alice, bob, charlie, workspace, provider, fake_relay):
    picky(fake_relay)
    as_bob, as_charlie, as_alice = Client(), Client(), Client()
    as_bob.force_login(bob)
    as_charlie.force_login(charlie)
    as_alice.force_login(alice)
    url = f"/api/providers/{provider.id}/probe/"
    assert as_charlie.post(url, {"model": "m"}, content_type="application/json").status_code == 404
    missing = as_bob.post(url, {}, content_type="application/json")
    assert missing.status_code == 400
    assert "model" in missing.json()["error"]
    probed = as_bob.post(url, {"model": "fake-model"}, content_type="application/json")
    assert probed.status_code == 200
    assert Provider.objects.get(id=provider.id).capabilities["parameters"]["top_k"]["status"] == "rejected"
    profile = f"/api/providers/{provider.id}/profile/"
    assert as_bob.patch(profile, {"omit_rejected": True}, content_type="application/json").status_code == 403
    assert (
        as_alice.patch(profile, {"omit_rejected": "yes"}, content_type="application/json").status_code == 400
    )
    assert (
        as_alice.patch(profile, {"omit_rejected": True}, content_type="application/json").status_code == 200
    )
    kept = Provider.objects.get(id=provider.id).capabilities
    assert kept["omit_rejected"] is True
    assert kept["parameters"]["top_k"]["status"] == "rejected"
    # A new probe keeps the owner's choice.
    assert as_bob.post(url, {"model": "fake-model"}, content_type="application/json").status_code == 200
    assert Provider.objects.get(id=provider.id).capabilities["omit_rejected"] is True


def test_reasoning_goes_back_inline_for_relays_that_think_inline():
    answer = Message(role="assistant", content="Four.", reasoning="2+2")
    assert answer.to_wire() == {"role": "assistant", "content": "Four."}
    assert answer.to_wire("think") == {"role": "assistant", "content": "<think>2+2</think>Four."}
    question = Message(role="user", content="2+2?", reasoning="")
    assert question.to_wire("reasoning_content") == {"role": "user", "content": "2+2?"}

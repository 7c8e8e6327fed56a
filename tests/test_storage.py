"""A run stores the exact text it sent once: each message's text is kept once however many
turns send it again, so a conversation's storage grows with its length, not its square."""

import html
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from playground.models import Conversation, Membership, Run
from playground.upstream import wire_json
from tests.test_relay import post, session_cookie, wait_for

TURNS = 100
# Each turn's question, about 300 bytes; the fake relay answers in five words.
QUESTION = "Turn {}: " + "please summarise the previous answer again, with one more detail about it. " * 4
BOUND = 200_000  # bytes; 93 KB measured here, where the whole history stored twice per run took 4.1 MB


def stored_request_bytes() -> int:
    """The bytes stored for what the runs sent: their request data and the message texts."""
    from playground import models

    total = 0
    if hasattr(models, "MessageText"):
        for template, texts in Run.objects.values_list("request_template", "request_texts"):
            total += len(template.encode()) + len(json.dumps(texts))
        for sha, text in models.MessageText.objects.values_list("sha256", "text"):
            total += len(sha) + len(text.encode())
        return total
    for body, text in Run.objects.values_list("request_body", "request_text"):
        total += len(json.dumps(body, ensure_ascii=False).encode()) + len(text.encode())
    return total


@pytest.mark.django_db(transaction=True)
async def test_100_turns_of_a_conversation_store_less_than_the_bound(alice, workspace, provider, fake_relay):
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice)
    cookie = await sync_to_async(session_cookie)(alice)
    for turn in range(1, TURNS + 1):
        payload = {
            "provider": provider.id,
            "model": "fake-model",
            "system": "Answer briefly.",
            "message": QUESTION.format(turn),
            "params": {"stream": True, "temperature": 0.5},
        }
        status, data = await post(cookie, f"/api/conversations/{conversation.id}/runs/", payload)
        assert status == 201, data
        run = await wait_for(data["run"]["id"])
        assert run.status == "completed", run.error_message
    stored = await sync_to_async(stored_request_bytes)()
    print(f"{TURNS} turns store {stored:,} bytes of request data")
    assert stored < BOUND

    # The last turn's body is rebuilt byte for byte as it was sent.
    sent = fake_relay.requests[-1].raw
    assert len(json.loads(sent)["messages"]) == 2 * TURNS
    run = await Run.objects.aget(id=run.id)
    assert (await sync_to_async(lambda: run.request_text)()).encode() == sent
    client = Client()
    await sync_to_async(client.force_login)(alice)
    detail = (await sync_to_async(client.get)(f"/api/runs/{run.id}/")).json()
    assert json.dumps(detail["request_body"], ensure_ascii=False).encode() == sent


def test_the_admin_shows_a_runs_body_as_sent(db, workspace):
    admin = User.objects.create_superuser("root", password="root-password")
    owner = {"role": Membership.Role.OWNER}
    Membership.objects.update_or_create(workspace=workspace, user=admin, defaults=owner)
    conversation = Conversation.objects.create(workspace=workspace, creator=admin)
    body = {"model": "m", "messages": [{"role": "user", "content": "où est 🌊"}], "stream": True}
    run = Run.objects.create(conversation=conversation, model="m", request_body=body)
    client = Client()
    client.force_login(admin)
    page = client.get(f"/admin/playground/run/{run.id}/change/")
    assert page.status_code == 200
    assert html.escape(wire_json(body)) in page.content.decode()


@pytest.mark.parametrize(
    "text",
    [
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}]}',
        '{"messages":[{"role":"user","content":"compact"}],"model":"m"}',  # other separators
        '{"model": "m", "messages": []}',
        '{"model": "m"}',
        "",
    ],
)
def test_a_runs_text_as_sent_reads_back_the_same_characters(db, workspace, text):
    conversation = Conversation.objects.create(workspace=workspace)
    run = Run.objects.create(conversation=conversation, model="m", request_text=text)
    stored = Run.objects.get(id=run.id)
    assert stored.request_text == text
    assert stored.request_body == (json.loads(text) if text else {})

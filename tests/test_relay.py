"""The run and the relay, end to end through playground.asgi.application in one process:
HTTP submit with a session cookie, the relay thread against a real local SSE relay,
the in-memory channel layer, and websocket clients with Origin and cookie headers."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import timezone

from playground import relay
from playground.asgi import application
from playground.models import Conversation, Message, Run
from playground.relay import handle
from playground.relay.events import done_messages
from playground.upstream import loop_reader
from playground.upstream.stream import ChatStream
from tests.conftest import CANARY_KEY
from tests.events import delta_count, text_of
from tests.fakes import chunk, slow_stream, sse
from tests.fastpaths import needs

CSRF = "a" * 32
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def clean_layer():
    await get_channel_layer().flush()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF}"


@pytest.fixture
def alice_cookie(alice):
    return session_cookie(alice)


def headers(cookie: str, origin: str = "http://localhost") -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"localhost"),
        (b"origin", origin.encode()),
        (b"cookie", cookie.encode()),
        (b"x-csrftoken", CSRF.encode()),
        (b"content-type", b"application/json"),
    ]


async def post(cookie: str, path: str, body: dict | None = None, method: str = "POST") -> tuple[int, dict]:
    communicator = HttpCommunicator(
        application, method, path, body=json.dumps(body or {}).encode(), headers=headers(cookie)
    )
    response = await communicator.get_response(timeout=10)
    return response["status"], json.loads(response["body"] or b"{}")


async def wait_for(run_id: int) -> Run:
    """The run once it has ended (its final write is in the database)."""
    for _ in range(200):
        run = await Run.objects.aget(id=run_id)
        if not run.is_active:
            await sync_to_async(run.load_request)()  # its body as sent, read here in async code
            return run
        await asyncio.sleep(0.05)
    raise AssertionError("the run did not finish")


async def submit(cookie, conversation, provider, message="Hi", **params):
    params.setdefault("stream", True)
    body = {"provider": provider.id, "model": "fake-model", "message": message, "params": params}
    return await post(cookie, f"/api/conversations/{conversation.id}/runs/", body)


async def watch(cookie: str, conversation, synced: bool = True) -> WebsocketCommunicator:
    """A websocket on the conversation; with `synced`, once its consumer has joined the
    conversation's group and listed the runs in progress (its "sync" event, kept as
    `ws.synced`). `connect()` returns at the accept, before either: a run submitted
    then could start, or even end, before the socket hears of it."""
    ws = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers(cookie))
    connected, _ = await ws.connect(timeout=5)
    assert connected
    if synced:
        ws.synced = await ws.receive_json_from(timeout=5)
        assert ws.synced["type"] == "sync", ws.synced
    return ws


async def receive_until(ws, kind: str, timeout: float = 10) -> list[dict]:
    """Every event up to and including the first of type `kind`."""
    events = []
    while True:
        event = await ws.receive_json_from(timeout=timeout)
        events.append(event)
        if event["type"] == kind:
            return events


async def receive_deltas(ws, count: int) -> list[dict]:
    """Every event until `count` deltas have arrived."""
    events: list[dict] = []
    while delta_count(events) < count:
        events.append(await ws.receive_json_from(timeout=5))
    return events


async def test_what_a_submission_starts_on_the_loop_does_not_inherit_its_request(
    alice_cookie, conversation, provider, monkeypatch
):
    """A task started from a request's thread inherits its context, and with it asgiref's
    ThreadSensitiveContext of the request (its pooled thread), which ends with the request:
    a thread-sensitive call the run's sender or a publication made later would raise."""
    layer, seen = get_channel_layer(), []
    send_forever, group_send = relay.RunHandle._send_forever, layer.group_send

    async def sender(self):
        seen.append(SyncToAsync.thread_sensitive_context.get(None))
        await send_forever(self)

    async def publish(group, message):
        seen.append(SyncToAsync.thread_sensitive_context.get(None))
        await group_send(group, message)

    monkeypatch.setattr(relay.RunHandle, "_send_forever", sender)
    monkeypatch.setattr(layer, "group_send", publish)
    status, data = await submit(alice_cookie, conversation, provider, "Name this conversation")
    assert status == 201
    await wait_for(data["run"]["id"])
    await asyncio.sleep(0.1)  # the conversation's new title, published without waiting
    assert len(seen) >= 2  # the sender, and the title's publication
    assert seen == [None] * len(seen)


async def test_it_streams_a_run_to_a_watching_websocket(alice_cookie, conversation, provider):
    ws = await watch(alice_cookie, conversation)
    assert ws.synced == {"type": "sync", "active": []}
    status, data = await submit(alice_cookie, conversation, provider, "Hello")
    assert status == 201
    events = await receive_until(ws, "run.done")
    started = next(e for e in events if e["type"] == "run.started")
    assert [m["content"] for m in started["messages"]] == ["Hello"]
    assert text_of(events, data["run"]["id"]) == "Hello from the fake relay"
    done = events[-1]["run"]
    assert done["status"] == "completed"
    assert done["choices"][0]["content"] == "Hello from the fake relay"
    assert done["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 5,
        "total_tokens": 12,
        "reasoning_tokens": None,
        "cached_tokens": None,
        "estimated": False,
    }
    await ws.disconnect()


@needs("request_threads")
async def test_a_submission_crosses_to_a_thread_and_back_once(
    alice_cookie, conversation, provider, monkeypatch
):
    """Each crossing waits behind the answers the loop relays: the middleware, the
    view and the start of the run take one trip to a thread, and the run's events
    start without the view waiting for the loop."""
    from asgiref import sync
    from django.core import signals
    from django.db import close_old_connections, reset_queries

    ws = await watch(alice_cookie, conversation)
    crossings = []
    to_thread, to_loop = sync.SyncToAsync.__call__, sync.AsyncToSync.__call__

    async def counted_to_thread(self, *args, **kwargs):
        crossings.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await to_thread(self, *args, **kwargs)

    def counted_to_loop(self, *args, **kwargs):
        crossings.append(getattr(self.awaitable, "__qualname__", repr(self.awaitable)))
        return to_loop(self, *args, **kwargs)

    # As in the server (Django's test Client and CaptureQueriesContext connect these again).
    signals.request_started.disconnect(close_old_connections)
    signals.request_started.disconnect(reset_queries)
    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(sync.AsyncToSync, "__call__", counted_to_loop)
    status, data = await submit(alice_cookie, conversation, provider, "Hello")
    await asyncio.sleep(0.1)  # the response's close, after its body went out
    monkeypatch.undo()
    assert status == 201
    # The middleware with the view inside, then the response's close (request_finished
    # closes the thread's connection). Django's stock handler took five before the close:
    # its request_started signal, the middleware, the CSRF check and the view each a trip.
    # The watching socket checks its user's access as the run starts (its own trip).
    assert crossings[0] == "convert_exception_to_response.<locals>.inner"
    submission = [name.rsplit(".", 1)[-1] for name in crossings[1:] if not name.endswith(".still_allowed")]
    assert submission in ([], ["close"]), crossings
    assert "ConversationConsumer.still_allowed" in crossings
    events = await receive_until(ws, "run.done")
    run_events = [e["type"] for e in events if e["type"].startswith("run.")]
    assert run_events[:2] == ["run.started", "run.delta"]
    assert run_events[-1] == "run.done"
    assert text_of(events, data["run"]["id"]) == "Hello from the fake relay"
    await ws.disconnect()


async def test_deltas_are_numbered_without_gaps(alice_cookie, conversation, provider):
    ws = await watch(alice_cookie, conversation)
    await submit(alice_cookie, conversation, provider)
    events = await receive_until(ws, "run.done")
    seqs = [e["seq"] for e in events if e["type"] in ("run.delta", "run.done")]
    assert seqs == list(range(1, len(seqs) + 1))
    await ws.disconnect()


async def test_the_run_is_stored_with_its_timings_and_body(alice_cookie, conversation, provider, fake_relay):
    ws = await watch(alice_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider, "Hello", temperature=0.5)
    await receive_until(ws, "run.done")
    run = await wait_for(data["run"]["id"])
    assert run.request_body == fake_relay.requests[-1].body
    assert run.request_body["stream_options"] == {"include_usage": True}
    assert run.request_body["temperature"] == 0.5
    assert run.submitted_at <= run.first_byte_at <= run.first_token_at <= run.finished_at
    assert run.finish_reasons == ["stop"]
    assert run.request_headers["Authorization"] == "Bearer sk-…8a0b"
    answer = await Message.objects.aget(run=run)
    assert (answer.role, answer.content, answer.position) == ("assistant", "Hello from the fake relay", 2)
    await ws.disconnect()


async def test_reasoning_then_answer_timings_are_kept_apart(alice_cookie, conversation, provider, fake_relay):
    thinking = [chunk(reasoning=w) for w in ("Let", " me", " think")]
    fake_relay.script(sse([*thinking, chunk("Answer"), chunk(finish="stop")], delay=0.1))
    _, data = await submit(alice_cookie, conversation, provider)
    run = await wait_for(data["run"]["id"])
    assert run.first_token_at == run.first_reasoning_at < run.first_content_at <= run.finished_at
    assert run.timing()["reasoning_ms"] >= 250  # three 100 ms gaps between the first thought and the answer


async def test_a_page_connecting_while_the_run_finishes_still_gets_its_end(
    alice_cookie, conversation, provider, monkeypatch
):
    """A snapshot taken during the final write says the run is active and is numbered
    below run.done, so a page that connected then applies run.done instead of dropping it
    as a repeat (it used to show "completed" with no timing or usage)."""
    seen = {}
    save_answer = relay.save_answer

    def spy(run):  # observes the live snapshot at that moment, then writes as usual
        seen["snapshot"] = relay.local_snapshot(run.id)
        return save_answer(run)

    monkeypatch.setattr(handle, "save_answer", spy)
    ws = await watch(alice_cookie, conversation)
    await submit(alice_cookie, conversation, provider)
    done = (await receive_until(ws, "run.done"))[-1]
    snapshot = seen["snapshot"]
    assert snapshot["status"] in Run.ACTIVE
    assert snapshot["seq"] < done["seq"]
    assert snapshot["choices"][0]["content"] == done["run"]["choices"][0]["content"]
    await ws.disconnect()


async def test_two_viewers_see_the_same_run(alice_cookie, bob, conversation, provider):
    bob_cookie = await sync_to_async(session_cookie)(bob)
    first, second = await watch(alice_cookie, conversation), await watch(bob_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider)
    seen = [await receive_until(first, "run.done"), await receive_until(second, "run.done")]
    assert text_of(seen[0], data["run"]["id"]) == text_of(seen[1], data["run"]["id"]) != ""
    assert seen[0][-1]["run"] == seen[1][-1]["run"]
    await first.disconnect()
    await second.disconnect()


async def test_a_viewer_who_joins_as_a_run_ends_gets_its_state_then_its_end(
    alice_cookie, conversation, provider, fake_relay, monkeypatch
):
    """A socket joins the group mid-run and lists the active runs only after the run has
    ended: the deltas queued for it meanwhile follow nothing it was sent. It sends the
    run's state, then its end (it used to close with 4008 as for a gap: CI saw it once)."""
    from playground.consumers import ConversationConsumer

    fake_relay.script(slow_stream(words=40, every=0.03))
    first = await watch(alice_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider)
    await receive_deltas(first, 2)

    joined, ended, consumers = asyncio.Event(), asyncio.Event(), []
    list_active = ConversationConsumer.__dict__["active_runs"]

    async def after_the_end(consumer):
        consumers.append(consumer)
        joined.set()
        await ended.wait()
        return await list_active.__get__(consumer, ConversationConsumer)()

    monkeypatch.setattr(ConversationConsumer, "active_runs", after_the_end)
    second = await watch(alice_cookie, conversation, synced=False)  # its listing waits for the end
    await joined.wait()
    done = (await receive_until(first, "run.done"))[-1]
    queue = get_channel_layer().channels[consumers[0].channel_name]
    queued = [message["type"] for _, message in list(queue._queue)]
    assert "run.delta" in queued  # the case at hand
    assert queued[-1] == "run.done"
    for _ in range(200):  # and the relay thread has let go of it: its state is the stored one
        if data["run"]["id"] not in relay.process.runs:
            break
        await asyncio.sleep(0.01)
    ended.set()

    events = await receive_until(second, "run.done")
    assert [e["type"] for e in events] == ["sync", "snapshot", "run.done"]
    assert events[0]["active"] == []
    assert events[1]["run"]["status"] == Run.Status.COMPLETED
    assert events[1]["run"]["choices"][0]["content"] == done["run"]["choices"][0]["content"] != ""
    assert events[2] == done
    await first.disconnect()
    await second.disconnect()


async def test_a_reconnect_mid_stream_loses_and_repeats_nothing(
    alice_cookie, conversation, provider, fake_relay
):
    fake_relay.script(slow_stream(words=40, every=0.03))
    ws = await watch(alice_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider)
    run_id = data["run"]["id"]
    before = await receive_deltas(ws, 5)
    await ws.disconnect()
    await asyncio.sleep(0.2)  # deltas published meanwhile reach nobody
    again = await watch(alice_cookie, conversation)
    after = await receive_until(again, "run.done")
    assert again.synced == {"type": "sync", "active": [run_id]}
    assert after[0]["type"] == "snapshot"
    assert after[0]["run"]["choices"][0]["content"].startswith(text_of(before, run_id))
    expected = "".join(f" w{i}" for i in range(40))
    assert text_of(after, run_id) == expected
    assert after[-1]["run"]["choices"][0]["content"] == expected
    await again.disconnect()


async def test_a_streaming_run_is_checkpointed_with_its_status_and_text(
    alice_cookie, conversation, provider, fake_relay
):
    fake_relay.script(slow_stream(words=500, every=0.02))
    ws = await watch(alice_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider)
    assert data["run"]["status"] == "queued"
    await receive_deltas(ws, 10)
    for _ in range(60):  # the keeper checkpoints about once a second
        stored = await Run.objects.aget(id=data["run"]["id"])
        # Its first checkpoint may come after the first word only: wait for one with three.
        if stored.status == "streaming" and len(stored.output[0]["content"].split()) >= 3:
            break
        await asyncio.sleep(0.05)
    assert stored.status == "streaming"
    assert stored.output[0]["content"].startswith(" w0 w1 w2")
    assert stored.last_seq > 0
    assert stored.first_token_at is not None
    await post(alice_cookie, f"/api/runs/{stored.id}/stop/")
    assert (await receive_until(ws, "run.done"))[-1]["run"]["status"] == "stopped"
    final = await Run.objects.aget(id=stored.id)
    assert final.status == "stopped"  # the keeper never overwrote the final write
    assert final.output[0]["content"].startswith(stored.output[0]["content"])
    await ws.disconnect()


async def test_stop_keeps_the_partial_text_and_estimates_usage(
    alice_cookie, conversation, provider, fake_relay
):
    fake_relay.script(slow_stream(words=500, every=0.02))
    ws = await watch(alice_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider)
    run_id = data["run"]["id"]
    events = await receive_deltas(ws, 3)
    status, body = await post(alice_cookie, f"/api/runs/{run_id}/stop/")
    assert (status, body) == (202, {"run": run_id, "stopping": True})
    events += await receive_until(ws, "run.done", timeout=2)
    done = events[-1]["run"]
    assert done["status"] == "stopped"
    assert done["choices"][0]["content"] == text_of(events, run_id)
    assert done["choices"][0]["content"].startswith(" w0 w1 w2")
    assert done["usage"]["estimated"] is True
    assert done["usage"]["completion_tokens"] > 0
    assert fake_relay.disconnected.wait(2)
    await ws.disconnect()


async def test_a_broken_stream_fails_in_plain_words_and_keeps_the_partial_answer(
    alice_cookie, conversation, provider, fake_relay
):
    fake_relay.script(sse([chunk("Half an"), chunk(" answer")], done=False, mode="close"))
    ws = await watch(alice_cookie, conversation)
    await submit(alice_cookie, conversation, provider)
    done = (await receive_until(ws, "run.done"))[-1]["run"]
    assert done["status"] == "failed"
    assert done["choices"][0]["content"] == "Half an answer"
    assert done["error"]["kind"] == "incomplete"
    assert "ended before the relay said it was done" in done["error"]["message"]
    await ws.disconnect()


async def test_issue15_4_invalid_utf8_from_the_relay_is_replaced_and_noted(
    alice_cookie, conversation, provider, fake_relay
):
    # Two invalid bytes, then a "✓" whose bytes the relay writes in two pieces (not an error).
    body = b'data: {"choices":[{"index":0,"delta":{"content":"a\xff\xfeb \xe2\x9c\x93"}}]}\n\n'
    body += b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    fake_relay.script(sse(body, pieces=[body.index(b"\x9c\x93") + 1], delay=0.05))
    ws = await watch(alice_cookie, conversation)
    await submit(alice_cookie, conversation, provider)
    done = (await receive_until(ws, "run.done"))[-1]["run"]
    await ws.disconnect()

    assert (done["status"], done["error"]) == ("completed", None)
    assert done["choices"][0]["content"] == "a\ufffd\ufffdb ✓"
    assert done["decode_errors"] == 2
    assert (await Run.objects.aget(id=done["id"])).decode_errors == 2
    status, inspected = await post(alice_cookie, f"/api/runs/{done['id']}/", method="GET")
    assert (status, inspected["decode_errors"]) == (200, 2)


async def test_an_upstream_401_reaches_the_user_without_the_key(
    alice_cookie, conversation, provider, fake_relay
):
    from tests.fakes import respond

    fake_relay.script(respond(401, {"error": {"message": f"Incorrect API key provided: {CANARY_KEY}"}}))
    ws = await watch(alice_cookie, conversation)
    await submit(alice_cookie, conversation, provider)
    done = (await receive_until(ws, "run.done"))[-1]["run"]
    assert done["status"] == "failed"
    assert done["error"] == {
        "kind": "auth",
        "message": "The relay rejected the API key (HTTP 401): Incorrect API key provided: [api key]",
    }
    await ws.disconnect()


async def test_a_relay_without_usage_gets_an_estimate_flagged_as_such(
    alice_cookie, conversation, provider, fake_relay
):
    fake_relay.script(sse([chunk("one two three"), chunk(finish="stop")]))
    ws = await watch(alice_cookie, conversation)
    await submit(alice_cookie, conversation, provider, "count")
    done = (await receive_until(ws, "run.done"))[-1]["run"]
    assert done["usage"]["estimated"] is True
    assert (done["usage"]["prompt_tokens"], done["usage"]["completion_tokens"]) == (1, 3)
    await ws.disconnect()


async def test_several_choices_are_kept_apart(alice_cookie, conversation, provider):
    ws = await watch(alice_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider, n=2)
    done = (await receive_until(ws, "run.done"))[-1]
    assert [c["content"] for c in done["run"]["choices"]] == ["Hello from the fake relay"] * 2
    assert [(m["choice_index"], m["in_history"]) for m in done["messages"]] == [(0, True), (1, False)]
    await ws.disconnect()


async def test_the_final_event_carries_a_long_answer_once(alice_cookie, conversation, provider, fake_relay):
    """run.done holds the answer's text once, in the run's choices, so a long answer's final
    frame stays well under the 1 MiB that stock autobahn allows an outgoing frame; its
    messages get their content, reasoning and tool calls back from those choices."""
    words = [f"w{i:06d} " for i in range(50_000)]  # 400 KB of answer, each word once
    thoughts = [f"t{i:06d} " for i in range(25_000)]  # and 200 KB of reasoning
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    answer = [chunk("".join(words[i : i + 500])) for i in range(0, len(words), 500)]
    reasoning = [chunk(reasoning="".join(thoughts[i : i + 500])) for i in range(0, len(thoughts), 500)]
    tools = [chunk(index=1, role="assistant", tool_calls=[call]), chunk(index=1, finish="tool_calls")]
    fake_relay.script(sse([*reasoning, *answer, *tools, chunk(finish="stop")]))
    ws = await watch(alice_cookie, conversation)
    _, data = await submit(alice_cookie, conversation, provider, "go", n=2)
    while (frame := await ws.receive_from(timeout=20)) and '"type": "run.done"' not in frame[:30]:
        pass
    assert len(frame.encode()) < 700_000  # the answer and reasoning (600 KB) once, and little else
    for marker in (words[0], words[-1], thoughts[0], thoughts[-1], '"call_1"'):
        assert frame.count(marker) == 1, marker
    done = json.loads(frame)
    assert done["run"]["choices"][0]["content"] == "".join(words)
    answer = Message.objects.filter(run_id=data["run"]["id"]).order_by("choice_index")
    stored = [m.to_dict() async for m in answer]
    assert [m["content"] for m in stored] == ["".join(words), ""]
    assert stored[0]["reasoning"] == "".join(thoughts)
    assert stored[1]["tool_calls"] == [{k: v for k, v in call.items() if k != "index"}]
    assert done_messages(done) == stored
    await ws.disconnect()


@pytest.mark.skipif(
    "loop_reader" in settings.FAST_PATHS, reason="loop_reader: the loop reads every stream, after begin()"
)
async def test_deltas_read_before_the_loop_starts_the_run_follow_its_start(
    alice, alice_cookie, conversation, provider, fake_relay
):
    """A relay thread can read a run's first chunks before the loop has run the run's
    begin(): another run's wake-up, already on its way, flushes this run too
    (Process.wake serves every run ready before it runs). Those deltas follow run.started,
    numbered from 1: none is lost, and the socket is not closed for a gap."""
    import threading
    import time

    other = await Conversation.objects.acreate(workspace_id=conversation.workspace_id, creator=alice)
    fake_relay.script(slow_stream(words=200, every=0.02))  # the other run: a chunk every 20 ms
    first = await watch(alice_cookie, other)
    await submit(alice_cookie, other, provider)
    await receive_deltas(first, 2)
    ws = await watch(alice_cookie, conversation)
    posted = {}

    def submit_from_a_request_thread() -> None:
        client = Client()
        client.force_login(alice)
        body = {"provider": provider.id, "model": "fake-model", "message": "Hi", "params": {"stream": True}}
        url = f"/api/conversations/{conversation.id}/runs/"
        posted["run"] = client.post(url, body, content_type="application/json").json()["run"]["id"]

    # The loop is held (as a busy loop is) while the other run's wake-up gets queued, then
    # this run's begin(), then this run's first chunk joins that earlier wake-up.
    loop, deadline = asyncio.get_running_loop(), time.monotonic() + 5
    while not relay.process._ready.get(loop):  # the other run's wake-up is on its way
        assert time.monotonic() < deadline, "the other run woke no loop"
        time.sleep(0.001)
    request = threading.Thread(target=submit_from_a_request_thread)
    request.start()
    request.join(10)
    deadline = time.monotonic() + 5
    while not ((handle := relay.process.runs.get(posted["run"])) and handle.flush_scheduled):
        assert time.monotonic() < deadline, "the run read no chunk"
        time.sleep(0.005)
    events = await receive_until(ws, "run.done")
    kinds = [e["type"] for e in events if e["type"] != "conversation.changed"]
    assert (kinds[0], kinds[-1]) == ("run.started", "run.done")
    seqs = [e["seq"] for e in events if e["type"] == "run.delta"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert text_of(events, posted["run"]) == fake_relay.reply
    await ws.disconnect()
    await first.disconnect()


async def test_invalid_parameters_are_refused_before_any_upstream_call(
    alice_cookie, conversation, provider, fake_relay
):
    status, body = await submit(alice_cookie, conversation, provider, temperature=2.5, top_logprobs=3)
    assert status == 400
    assert body["fields"] == {
        "temperature": "must be between 0 and 2",
        "top_logprobs": "needs logprobs set to true",
    }
    assert fake_relay.requests == []
    assert not await Message.objects.filter(conversation=conversation).aexists()


async def test_the_extra_body_is_held_to_the_parameters_ranges(
    alice_cookie, conversation, provider, fake_relay
):
    status, body = await post(
        alice_cookie,
        f"/api/conversations/{conversation.id}/runs/",
        {"provider": provider.id, "model": "m", "message": "Hi", "extra_body": {"top_k": 4, "n": 1000}},
    )
    assert (status, body["fields"]) == (400, {"extra_body": "n must be between 1 and 128"})
    assert fake_relay.requests == []


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ('"max_tokens": Infinity', "max_tokens", "must be a whole number"),
        ('"seed": 1e400', "seed", "must be a whole number"),
        ('"n": NaN', "n", "must be a whole number"),
        ('"temperature": -Infinity', "temperature", "must be a number"),
        ('"logit_bias": {"50256": NaN}', "logit_bias", "bias for token 50256 must be between -100 and 100"),
        (
            '"tool_choice": {"function": {"name": "f", "x": NaN}}',
            "tool_choice",
            "must not contain NaN or Infinity",
        ),
    ],
)
async def test_numbers_json_cannot_carry_are_refused_by_field(
    alice_cookie, conversation, provider, fake_relay, params, field, reason
):
    """Python's JSON parser reads NaN, Infinity and 1e400 (as inf); no relay takes them."""
    raw = f'{{"provider": {provider.id}, "model": "m", "message": "Hi", "params": {{{params}}}}}'.encode()
    communicator = HttpCommunicator(
        application,
        "POST",
        f"/api/conversations/{conversation.id}/runs/",
        body=raw,
        headers=headers(alice_cookie),
    )
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 400
    assert json.loads(response["body"])["fields"] == {field: reason}
    status, body = await post(
        alice_cookie,
        f"/api/conversations/{conversation.id}/runs/",
        {"provider": provider.id, "model": "m", "message": "Hi", "extra_body": {"x": [float("nan")]}},
    )
    assert (status, body["fields"]) == (400, {"extra_body": "x must not contain NaN or Infinity"})
    assert fake_relay.requests == []


async def test_over_the_cap_the_submit_answers_busy_at_once(alice_cookie, conversation, provider, fake_relay):
    taken = 0
    while relay.process.slots.acquire(blocking=False):
        taken += 1
    try:
        status, body = await submit(alice_cookie, conversation, provider)
    finally:
        for _ in range(taken):
            relay.process.slots.release()
    assert status == 503
    assert body["busy"] is True
    assert fake_relay.requests == []
    assert not await Run.objects.aexists()


async def test_a_viewer_cannot_start_runs(bob, conversation, provider):
    from playground.models import Membership

    await Membership.objects.filter(user=bob).aupdate(role=Membership.Role.VIEWER)
    cookie = await sync_to_async(session_cookie)(bob)
    status, _ = await submit(cookie, conversation, provider)
    assert status == 403


async def test_non_members_are_refused_with_4403(charlie, conversation):
    cookie = await sync_to_async(session_cookie)(charlie)
    ws = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers(cookie))
    await ws.connect()
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}


async def test_anonymous_visitors_are_refused_with_4401(conversation):
    ws = WebsocketCommunicator(application, f"/ws/conversations/{conversation.id}/", headers=headers(""))
    await ws.connect()
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}


async def test_foreign_origins_are_refused(alice_cookie, conversation):
    ws = WebsocketCommunicator(
        application,
        f"/ws/conversations/{conversation.id}/",
        headers=headers(alice_cookie, "http://evil.example"),
    )
    connected, _ = await ws.connect()
    assert connected is False


def test_the_final_write_stores_every_field_as_the_orm_reads_it(alice, conversation, provider):
    """save_answer writes its UPDATE as SQL from each field's prepared value: every field
    must read back as written (JSON, datetimes, the cost's Decimal, nulls)."""
    from decimal import Decimal

    run = Run.objects.create(conversation=conversation, user=alice, provider=provider, model="m", position=1)
    now = timezone.now()
    choices = [
        {
            "index": 0,
            "content": "Hi ✓",
            "reasoning": "r",
            "tool_calls": None,
            "logprobs": None,
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "content": "",
            "reasoning": "",
            "tool_calls": [{"id": "t"}],
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
    ]
    final = {
        "status": Run.Status.COMPLETED,
        "output": choices,
        "finish_reasons": ["stop", "tool_calls"],
        "last_seq": 7,
        "finished_at": now,
        "first_byte_at": now - timedelta(seconds=2),
        "first_token_at": now - timedelta(seconds=1),
        "first_reasoning_at": now - timedelta(seconds=1),
        "first_content_at": None,
        "response_status": 200,
        "response_headers": {"content-type": "text/event-stream"},
        "raw_frames": ['data: {"a": 1}', "data: [DONE]"],
        "frames_dropped": 3,
        "decode_errors": 2,
        "error_kind": "",
        "error_message": "",
        "prompt_tokens": 11,
        "completion_tokens": 5,
        "total_tokens": 16,
        "reasoning_tokens": None,
        "cached_tokens": 2,
        "usage_estimated": False,
        "cost_usd": Decimal("0.00012345"),
        "checks": None,  # computed by save_answer: the request asked for no JSON output
    }
    assert sorted(final) == sorted(relay.FINAL_FIELDS)
    for name, value in final.items():
        setattr(run, name, value)
    messages = relay.save_answer(run)
    stored = Run.objects.get(id=run.id)
    assert {name: getattr(stored, name) for name in final} == final
    assert [(m.choice_index, m.content, m.in_history) for m in Message.objects.filter(run=run)] == [
        (0, "Hi ✓", True),
        (1, "", False),
    ]
    assert [m.id for m in messages] == list(Message.objects.filter(run=run).values_list("id", flat=True))
    assert Conversation.objects.get(id=conversation.id).updated_at >= now


def test_the_final_write_of_a_deleted_run_fails_as_the_orms_did(alice, conversation, provider):
    from django.db import DatabaseError

    run = Run.objects.create(conversation=conversation, user=alice, provider=provider, model="m", position=1)
    Run.objects.filter(id=run.id).delete()
    with pytest.raises(DatabaseError, match="is gone"):
        relay.save_answer(run)


async def test_an_interrupted_run_is_reconciled(alice, alice_cookie, conversation, provider):
    old = timezone.now() - timedelta(minutes=5)
    partial = [
        {
            "index": 0,
            "content": "Checkpointed te",
            "reasoning": "",
            "tool_calls": None,
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    orphan = await Run.objects.acreate(
        conversation=conversation,
        user=alice,
        provider=provider,
        provider_name="Fake",
        model="m",
        status="streaming",
        submitted_at=old,
        heartbeat_at=old,
        output=partial,
        last_seq=4,
        owner="relay.gone!process",
        position=2,
    )
    ws = await watch(alice_cookie, conversation)
    assert ws.synced == {"type": "sync", "active": []}
    await orphan.arefresh_from_db()
    assert orphan.status == "interrupted"
    assert orphan.error_kind == "interrupted"
    answer = await Message.objects.aget(run=orphan)
    assert answer.content == "Checkpointed te"
    await ws.disconnect()


async def test_a_live_run_of_another_process_is_left_alone(alice, conversation, provider):
    live = await Run.objects.acreate(
        conversation=conversation,
        user=alice,
        provider=provider,
        provider_name="Fake",
        model="m",
        status="streaming",
        heartbeat_at=timezone.now(),
        owner="relay.other!process",
        position=2,
    )
    await sync_to_async(relay.reconcile_stale_runs)()
    await live.arefresh_from_db()
    assert live.status == "streaming"


async def test_a_client_that_falls_behind_is_closed_and_resyncs(
    alice_cookie, conversation, provider, fake_relay
):
    """A gap in seq means the layer dropped messages for us: close with 4008."""
    ws = await watch(alice_cookie, conversation)
    layer = get_channel_layer()
    await layer.group_send(
        f"conversation-{conversation.id}", {"type": "run.delta", "run": 999, "seq": 1, "choices": []}
    )
    await layer.group_send(
        f"conversation-{conversation.id}", {"type": "run.delta", "run": 999, "seq": 5, "choices": []}
    )
    assert (await ws.receive_json_from())["seq"] == 1
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4008}


async def test_watchers_hear_of_a_rename_and_a_delete(alice_cookie, conversation):
    ws = await watch(alice_cookie, conversation)
    path = f"/api/conversations/{conversation.id}/"
    await post(alice_cookie, path, {"title": "Renamed"}, method="PATCH")
    assert await ws.receive_json_from() == {
        "type": "conversation.changed",
        "conversation": conversation.id,
        "title": "Renamed",
    }
    await post(alice_cookie, path, method="DELETE")
    assert await ws.receive_json_from() == {
        "type": "conversation.changed",
        "conversation": conversation.id,
        "deleted": True,
    }
    await ws.disconnect()


@pytest.mark.parametrize(("stream", "read_by_thread"), [(True, False), (False, True)])
async def test_an_event_stream_is_read_on_the_event_loop(
    alice_cookie, conversation, provider, monkeypatch, stream, read_by_thread
):
    """A streamed answer is read by the server's loop; a JSON answer by the relay thread."""
    if stream and not loop_reader.enabled():
        pytest.skip("the loop reader is off (PLAYGROUND_FAST_PATHS): the relay thread reads every answer")
    threads_read = []
    read = ChatStream.read

    def spy(self):
        threads_read.append(self.body["stream"])
        return read(self)

    monkeypatch.setattr(ChatStream, "read", spy)

    status, data = await submit(alice_cookie, conversation, provider, "Hello", stream=stream)
    run = await wait_for(data["run"]["id"])

    assert (status, run.status) == (201, "completed")
    assert run.output[0]["content"] == "Hello from the fake relay"
    assert bool(threads_read) is read_by_thread


async def test_the_first_message_names_the_conversation_for_watchers(alice_cookie, conversation, provider):
    ws = await watch(alice_cookie, conversation)
    await submit(alice_cookie, conversation, provider, "Why is the sky blue?")
    events = await receive_until(ws, "run.done")
    renamed = [e for e in events if e["type"] == "conversation.changed"]
    assert renamed == [
        {"type": "conversation.changed", "conversation": conversation.id, "title": "Why is the sky blue?"}
    ]
    await ws.disconnect()


async def test_a_final_event_numbered_below_what_was_relayed_still_arrives(alice_cookie, conversation):
    """A run reconciled after its process died ends at its checkpoint, below later deltas."""
    ws = await watch(alice_cookie, conversation)
    layer, group = get_channel_layer(), f"conversation-{conversation.id}"
    for seq in (1, 2, 3):
        await layer.group_send(group, {"type": "run.delta", "run": 7, "seq": seq, "choices": []})
    done = {"type": "run.done", "run": {"id": 7, "status": "interrupted"}, "seq": 2, "messages": []}
    await layer.group_send(group, done)
    assert [(await ws.receive_json_from())["seq"] for _ in range(3)] == [1, 2, 3]
    assert await ws.receive_json_from() == done
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
def test_a_relay_thread_keeps_an_sqlite_connection_while_young_and_returns_a_server_one():
    """An SQLite connection is a file handle here, and opening one was a twentieth of a
    short run's CPU; it is kept for the thread's next run until CONN_MAX_AGE. PostgreSQL
    connections go back, or a pool of relay threads would hold as many."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def a_run_then_the_next() -> tuple[bool, bool]:
        saved = connection.settings_dict["CONN_MAX_AGE"]
        connection.settings_dict["CONN_MAX_AGE"] = 60
        try:
            Run.objects.count()
            relay.settle_connection()  # the end of a run
            kept = connection.connection is not None
            connection.close_at = time.monotonic() - 1  # as if 60 s had passed
            relay.settle_connection()  # the start of the next
            return kept, connection.connection is None
        finally:
            connection.settings_dict["CONN_MAX_AGE"] = saved
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        kept, closed_once_old = pool.submit(a_run_then_the_next).result()
    assert kept == (connection.vendor == "sqlite")
    assert closed_once_old

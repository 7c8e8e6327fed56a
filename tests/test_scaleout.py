"""Scale-out: two Daphne processes on PostgreSQL + Redis (channels_redis).

A run submitted through one process is watched, resumed and stopped through the
other; a process killed mid-run leaves a run that the survivor marks interrupted.
These always use PostgreSQL and Redis, whatever the rest of the pass uses.
"""

import asyncio
import json

import pytest
import requests
import websockets

from tests.events import delta_count, text_of
from tests.servers import AppServer, Client, add_member, app_database, manage

pytestmark = pytest.mark.scaleout

FAST_RECONCILE = {
    "PLAYGROUND_HEARTBEAT_SECONDS": "0.5",
    "PLAYGROUND_STALE_AFTER_SECONDS": "3",
    "PLAYGROUND_CHECKPOINT_SECONDS": "0.3",
}


@pytest.fixture(scope="module")
def cluster():
    with (
        app_database("postgres", redis=True, **FAST_RECONCILE) as env,
        AppServer(env) as first,
        AppServer(env) as second,
    ):
        yield first, second


async def connect(client: Client, conversation: int):
    """A websocket as a browser opens one (no limit on the size of a message)."""
    ws_url = client.url.replace("http://", "ws://") + f"/ws/conversations/{conversation}/"
    headers = {"Cookie": client.cookie_header, "Origin": client.url}
    return await websockets.connect(ws_url, additional_headers=headers, max_size=None)


async def next_event(ws, timeout: float = 15) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, kind: str, timeout: float = 30) -> list[dict]:
    events = []
    while True:
        events.append(await next_event(ws, timeout))
        if events[-1]["type"] == kind:
            return events


async def deltas(ws, count: int) -> list[dict]:
    """Every event until `count` deltas have arrived."""
    events: list[dict] = []
    while delta_count(events) < count:
        events.append(await next_event(ws))
    return events


async def watch_demo_run(submitter: Client, watcher: Client, max_tokens: int, rate: int):
    """A websocket on `watcher`'s process, then a Demo run submitted through `submitter`'s."""
    conversation = submitter.new_conversation()
    ws = await connect(watcher, conversation)
    assert await next_event(ws) == {"type": "sync", "active": []}
    response = submitter.submit(
        conversation, submitter.demo_provider(), "go", stream=True, max_tokens=max_tokens,
        extra_body={"tokens_per_second": rate},
    )  # fmt: skip
    assert response.status_code == 201
    return ws, conversation, response.json()["run"]["id"]


def expected_lorem(server_url: str, max_tokens: int, seed: int = 0) -> str:
    body = {
        "model": "demo-lorem",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": max_tokens,
        "seed": seed,
    }
    # The Demo relay answers a logged-in session (or the Demo provider's key).
    response = Client(server_url).session.post(f"{server_url}/demo/v1/chat/completions", json=body)
    return response.json()["choices"][0]["message"]["content"]


async def test_a_run_submitted_through_one_process_streams_to_a_watcher_on_the_other(cluster):
    first, second = cluster
    ws, _, run_id = await watch_demo_run(Client(first.url), Client(second.url), max_tokens=40, rate=200)
    events = await until(ws, "run.done")
    assert [e["type"] for e in events if e["type"].startswith("run.")][0] == "run.started"
    assert text_of(events, run_id) == expected_lorem(first.url, 40)
    assert events[-1]["run"]["status"] == "completed"
    assert events[-1]["run"]["usage"]["completion_tokens"] == 40
    await ws.close()


def test_a_log_out_in_one_process_holds_in_the_other(cluster):
    """Sessions are cached (in Redis here): the other process must not keep a stale copy."""
    first, second = cluster
    client = Client(first.url)
    elsewhere = requests.Session()
    elsewhere.cookies.update(client.session.cookies)
    # The session is read (and cached) through the other process too.
    assert elsewhere.get(f"{second.url}/api/conversations/").status_code == 200
    logout = client.session.post(
        f"{first.url}/accounts/logout/", headers=client.headers, allow_redirects=False
    )
    assert logout.status_code == 302
    assert client.get("/api/conversations/").status_code == 401
    assert elsewhere.get(f"{second.url}/api/conversations/").status_code == 401


async def closed_with(ws, timeout: float = 15) -> int:
    """The close code of the socket, skipping the frames sent before it."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code


async def test_issue15_3_access_taken_away_reaches_sockets_in_every_process(cluster):
    """A log out through one process closes that session's socket on the other (4401); a
    membership removed by a third process (a shell) closes the user's sockets (4403)."""
    first, second = cluster
    admin = Client(first.url)
    conversation = admin.new_conversation()
    ws = await connect(Client(second.url), conversation)  # its own session
    logged_out = await connect(admin, conversation)
    assert (await next_event(ws))["type"] == "sync"
    assert (await next_event(logged_out))["type"] == "sync"
    admin.session.post(f"{second.url}/accounts/logout/", headers=admin.headers, allow_redirects=False)
    assert await closed_with(logged_out) == 4401

    add_member(first.env, "erin", "erin-password-123")
    erin = Client(second.url, "erin", "erin-password-123")
    owner = Client(first.url)
    shared = owner.new_conversation()
    erin_ws = await connect(erin, shared)
    assert (await next_event(erin_ws))["type"] == "sync"
    manage(
        first.env,
        "shell",
        "-c",
        "from playground.models import Membership; "
        "[m.delete() for m in Membership.objects.filter(user__username='erin')]",
    )
    assert await closed_with(erin_ws) == 4403
    await ws.close()


async def test_a_run_is_stopped_through_the_other_process(cluster):
    first, second = cluster
    alice_b = Client(second.url)
    ws, _, run_id = await watch_demo_run(Client(first.url), alice_b, max_tokens=2000, rate=20)
    events = await deltas(ws, 3)
    stop = alice_b.post(f"/api/runs/{run_id}/stop/")
    assert stop.status_code == 202
    events += await until(ws, "run.done", timeout=3)
    done = events[-1]["run"]
    assert done["status"] == "stopped"
    assert done["choices"][0]["content"] == text_of(events, run_id)
    assert done["usage"]["estimated"] is True
    await ws.close()


async def test_a_reconnect_to_the_other_process_resumes_without_loss_or_repeats(cluster):
    first, second = cluster
    alice_b = Client(second.url)
    ws, conversation, run_id = await watch_demo_run(Client(first.url), alice_b, max_tokens=120, rate=60)
    before = await deltas(ws, 5)
    await ws.close()
    await asyncio.sleep(0.3)
    again = await connect(alice_b, conversation)
    after = await until(again, "run.done")
    assert after[0] == {"type": "sync", "active": [run_id]}
    assert after[1]["type"] == "snapshot"
    assert after[1]["run"]["choices"][0]["content"].startswith(text_of(before, run_id))
    assert text_of(after, run_id) == expected_lorem(first.url, 120)
    await again.close()


async def test_a_run_left_by_a_killed_process_is_marked_interrupted_by_the_survivor():
    with (
        app_database("postgres", redis=True, **FAST_RECONCILE) as env,
        AppServer(env) as doomed,
        AppServer(env) as survivor,
    ):
        alice_survivor = Client(survivor.url)
        ws, conversation, run_id = await watch_demo_run(
            Client(doomed.url), alice_survivor, max_tokens=5000, rate=30
        )
        events = await deltas(ws, 30)  # past a checkpoint
        doomed.kill()
        events += await until(ws, "run.done", timeout=20)
        done = events[-1]["run"]
        assert done["status"] == "interrupted"
        assert done["error"]["kind"] == "interrupted"
        assert done["choices"][0]["content"]
        assert text_of(events, run_id).startswith(done["choices"][0]["content"])
        transcript = alice_survivor.get(f"/api/conversations/{conversation}/").json()
        assert [m["content"] for m in transcript["messages"] if m["role"] == "assistant"] == [
            done["choices"][0]["content"]
        ]
        await ws.close()

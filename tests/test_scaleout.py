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

from tests.servers import AppServer, Client, app_database

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
    ws_url = client.url.replace("http://", "ws://") + f"/ws/conversations/{conversation}/"
    headers = {"Cookie": client.cookie_header, "Origin": client.url}
    return await websockets.connect(ws_url, additional_headers=headers)


async def next_event(ws, timeout: float = 15) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, kind: str, timeout: float = 30) -> list[dict]:
    events = []
    while True:
        events.append(await next_event(ws, timeout))
        if events[-1]["type"] == kind:
            return events


def shown_text(events: list[dict], run_id: int) -> str:
    text, seq = "", 0
    for e in events:
        if e["type"] == "snapshot" and e["run"]["id"] == run_id:
            text, seq = e["run"]["choices"][0]["content"] if e["run"]["choices"] else "", e["run"]["seq"]
        elif e["type"] == "run.delta" and e["run"] == run_id and e["seq"] > seq:
            text += "".join(c.get("content", "") for c in e["choices"])
            seq = e["seq"]
    return text


def expected_lorem(server_url: str, max_tokens: int, seed: int = 0) -> str:
    body = {
        "model": "demo-lorem",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": max_tokens,
        "seed": seed,
    }
    response = requests.post(
        f"{server_url}/demo/v1/chat/completions", json=body, headers={"Authorization": "Bearer x"}
    )
    return response.json()["choices"][0]["message"]["content"]


async def test_a_run_submitted_through_one_process_streams_to_a_watcher_on_the_other(cluster):
    first, second = cluster
    alice_a, alice_b = Client(first.url), Client(second.url)
    conversation = alice_a.new_conversation()
    ws = await connect(alice_b, conversation)
    assert await next_event(ws) == {"type": "sync", "active": []}
    response = alice_a.submit(
        conversation,
        alice_a.demo_provider(),
        "go",
        stream=True,
        max_tokens=40,
        extra_body={"tokens_per_second": 200},
    )
    assert response.status_code == 201
    run_id = response.json()["run"]["id"]
    events = await until(ws, "run.done")
    assert [e["type"] for e in events if e["type"].startswith("run.")][0] == "run.started"
    assert shown_text(events, run_id) == expected_lorem(first.url, 40)
    assert events[-1]["run"]["status"] == "completed"
    assert events[-1]["run"]["usage"]["completion_tokens"] == 40
    await ws.close()


async def test_a_run_is_stopped_through_the_other_process(cluster):
    first, second = cluster
    alice_a, alice_b = Client(first.url), Client(second.url)
    conversation = alice_a.new_conversation()
    ws = await connect(alice_b, conversation)
    await next_event(ws)
    run_id = alice_a.submit(
        conversation,
        alice_a.demo_provider(),
        "go",
        stream=True,
        max_tokens=2000,
        extra_body={"tokens_per_second": 20},
    ).json()["run"]["id"]
    events = []
    while sum(e["type"] == "run.delta" for e in events) < 3:
        events.append(await next_event(ws))
    stop = alice_b.post(f"/api/runs/{run_id}/stop/")
    assert stop.status_code == 202
    events += await until(ws, "run.done", timeout=3)
    done = events[-1]["run"]
    assert done["status"] == "stopped"
    assert done["choices"][0]["content"] == shown_text(events, run_id)
    assert done["usage"]["estimated"] is True
    await ws.close()


async def test_a_reconnect_to_the_other_process_resumes_without_loss_or_repeats(cluster):
    first, second = cluster
    alice_a, alice_b = Client(first.url), Client(second.url)
    conversation = alice_a.new_conversation()
    ws = await connect(alice_b, conversation)
    await next_event(ws)
    run_id = alice_a.submit(
        conversation,
        alice_a.demo_provider(),
        "go",
        stream=True,
        max_tokens=120,
        extra_body={"tokens_per_second": 60},
    ).json()["run"]["id"]
    before = []
    while sum(e["type"] == "run.delta" for e in before) < 5:
        before.append(await next_event(ws))
    await ws.close()
    await asyncio.sleep(0.3)
    again = await connect(alice_b, conversation)
    after = await until(again, "run.done")
    assert after[0] == {"type": "sync", "active": [run_id]}
    assert after[1]["type"] == "snapshot"
    assert after[1]["run"]["choices"][0]["content"].startswith(shown_text(before, run_id))
    assert shown_text(after, run_id) == expected_lorem(first.url, 120)
    await again.close()


async def test_a_run_left_by_a_killed_process_is_marked_interrupted_by_the_survivor():
    with (
        app_database("postgres", redis=True, **FAST_RECONCILE) as env,
        AppServer(env) as doomed,
        AppServer(env) as survivor,
    ):
        alice_doomed, alice_survivor = Client(doomed.url), Client(survivor.url)
        conversation = alice_doomed.new_conversation()
        ws = await connect(alice_survivor, conversation)
        await next_event(ws)
        run_id = alice_doomed.submit(
            conversation,
            alice_doomed.demo_provider(),
            "go",
            stream=True,
            max_tokens=5000,
            extra_body={"tokens_per_second": 30},
        ).json()["run"]["id"]
        events = []
        while sum(e["type"] == "run.delta" for e in events) < 30:  # past a checkpoint
            events.append(await next_event(ws))
        doomed.kill()
        events += await until(ws, "run.done", timeout=20)
        done = events[-1]["run"]
        assert done["status"] == "interrupted"
        assert done["error"]["kind"] == "interrupted"
        assert done["choices"][0]["content"]
        assert shown_text(events, run_id).startswith(done["choices"][0]["content"])
        transcript = alice_survivor.get(f"/api/conversations/{conversation}/").json()
        assert [m["content"] for m in transcript["messages"] if m["role"] == "assistant"] == [
            done["choices"][0]["content"]
        ]
        await ws.close()

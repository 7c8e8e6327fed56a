"""Issue 15, section 5, across two Daphne processes on PostgreSQL + Redis: the stream caps
are counted in the database, and every process reconciles a dead one's runs on a timer."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.servers import AppServer, Client, app_database, manage

pytestmark = pytest.mark.scaleout

SLOW = {"max_tokens": 2000, "extra_body": {"tokens_per_second": 5}}

USERS = """
from django.contrib.auth.models import User
from playground.models import DEMO_PROVIDER_NAME, Membership, Provider, Workspace, new_demo_key
first = Workspace.objects.order_by("id").first()
other = Workspace.objects.create(name="Other", slug="other")
demo = Provider(workspace=other, name=DEMO_PROVIDER_NAME, is_demo=True)
demo.set_api_key(new_demo_key())
demo.save()
for name, workspace in [("bob", first), ("carol", other)]:
    user = User.objects.create_user(name, password=name + "-password-123")
    Membership.objects.filter(user=user).delete()
    Membership.objects.create(workspace=workspace, user=user, role="member")
"""


def send(client: Client) -> int:
    """A slow Demo run in a new conversation: its status code."""
    conversation = client.new_conversation()
    params = {**SLOW, "extra_body": dict(SLOW["extra_body"])}
    return client.submit(conversation, client.demo_provider(), "go", stream=True, **params)


def test_stream_caps_hold_across_two_processes():
    with (
        app_database(
            "postgres",
            redis=True,
            PLAYGROUND_MAX_STREAMS_PER_USER="2",
            PLAYGROUND_MAX_STREAMS_PER_WORKSPACE="3",
        ) as env,
        AppServer(env) as first,
        AppServer(env) as second,
    ):
        manage(env, "shell", "-c", USERS)
        admins = [Client(first.url), Client(second.url), Client(first.url), Client(second.url)]
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(send, admins))
        assert sorted(r.status_code for r in responses) == [201, 201, 429, 429]
        for refused in (r.json() for r in responses if r.status_code == 429):
            assert (refused["cap"], refused["active"], refused["limit"]) == ("user", 2, 2)
            assert "user limit is 2" in refused["error"]

        bob_first = Client(first.url, "bob", "bob-password-123")
        bob_second = Client(second.url, "bob", "bob-password-123")
        assert send(bob_second).status_code == 201
        refused = send(bob_first)
        assert refused.status_code == 429
        details = refused.json()
        assert (details["cap"], details["active"], details["limit"]) == ("workspace", 3, 3)

        # Another workspace's user is unaffected.
        assert send(Client(first.url, "carol", "carol-password-123")).status_code == 201
        assert send(Client(second.url, "carol", "carol-password-123")).status_code == 201


def poll_status(client: Client, run_id: int, wanted: str, seconds: float = 30) -> str:
    """The run's status once it is `wanted`, or the last seen when `seconds` ran out."""
    deadline = time.monotonic() + seconds
    while True:
        status = client.get(f"/api/runs/{run_id}/").json()["status"]
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_a_survivor_that_serves_no_submission_marks_a_dead_processs_runs_interrupted():
    """The survivor only answers reads: its keeper, started with the process, still
    reconciles the dead process's run; and Stop on it says it was interrupted."""
    fast = {
        "PLAYGROUND_HEARTBEAT_SECONDS": "0.5",
        "PLAYGROUND_STALE_AFTER_SECONDS": "2",
        "PLAYGROUND_CHECKPOINT_SECONDS": "0.3",
    }
    with (
        app_database("postgres", redis=True, **fast) as env,
        AppServer(env) as doomed,
        AppServer(env) as survivor,
    ):
        reader = Client(survivor.url)
        response = send(Client(doomed.url))
        assert response.status_code == 201
        run_id = response.json()["run"]["id"]
        assert poll_status(reader, run_id, "streaming") == "streaming"
        doomed.kill()
        assert poll_status(reader, run_id, "interrupted") == "interrupted"
        stop = reader.post(f"/api/runs/{run_id}/stop/")
        assert stop.status_code == 409, survivor.output()[-3000:]
        assert stop.json()["error"].startswith("This run was interrupted")

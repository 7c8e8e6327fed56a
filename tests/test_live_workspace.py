"""The workspace channel (ws/workspaces/<id>/) and presence on the conversation socket.

In-process on the in-memory layer: the events of conversation changes and who may
receive them, the close codes, and presence between two viewers. Across two Daphne
processes on PostgreSQL + Redis: a page on one process sees a conversation created and
a run started and ended through the other, and presence spans both.
"""

import asyncio
import json
import re

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from playground.asgi import application
from playground.models import Conversation, Membership, Run, Workspace
from playground.relay import events
from tests.test_relay import headers, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def open_socket(user, path: str) -> WebsocketCommunicator:
    cookie = await sync_to_async(session_cookie)(user)
    ws = WebsocketCommunicator(application, path, headers=headers(cookie))
    connected, _ = await ws.connect(timeout=5)
    assert connected
    return ws


async def workspace_socket(user, workspace) -> WebsocketCommunicator:
    ws = await open_socket(user, f"/ws/workspaces/{workspace.id}/")
    return ws


async def listed(ws, timeout: float = 5) -> dict:
    """The next conversation.listed event (skipping nothing else: any other type fails)."""
    event = await ws.receive_json_from(timeout)
    assert event["type"] == "conversation.listed", event
    return event


async def closed_with(ws, timeout: float = 5) -> int:
    while True:
        output = await ws.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output["code"]


async def nothing_more(ws) -> None:
    assert await ws.receive_nothing(timeout=0.3)


def api(user, method: str, path: str, body: dict | None = None):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return getattr(client, method)(path, data=json.dumps(body or {}), content_type="application/json")


@pytest.fixture
def carol(workspace):
    """A viewer of the Acme workspace."""
    user = User.objects.create_user("carol", password="carol-password")
    Membership.objects.create(workspace=workspace, user=user, role=Membership.Role.VIEWER)
    return user


async def test_a_conversation_created_renamed_and_deleted_reaches_every_member_with_who(
    alice, bob, workspace
):
    ws = await workspace_socket(bob, workspace)
    assert await ws.receive_json_from(5) == {"type": "workspace.sync", "running": []}
    created = await sync_to_async(api)(alice, "post", "/api/conversations/", {"title": "Plans"})
    assert created.status_code == 201
    conv_id = created.json()["id"]
    event = await listed(ws)
    assert (event["conversation"], event["action"], event["by"]) == (conv_id, "created", "alice")
    assert "title" not in event
    assert "Plans" not in json.dumps(event)

    renamed = await sync_to_async(api)(alice, "patch", f"/api/conversations/{conv_id}/", {"title": "Q3"})
    assert renamed.status_code == 200
    event = await listed(ws)
    assert (event["action"], event["by"]) == ("renamed", "alice")
    assert "Q3" not in json.dumps(event)

    deleted = await sync_to_async(api)(alice, "delete", f"/api/conversations/{conv_id}/")
    assert deleted.status_code == 200
    event = await listed(ws)
    assert (event["conversation"], event["action"], event["by"]) == (conv_id, "deleted", "alice")
    await nothing_more(ws)
    await ws.disconnect()


async def test_a_private_conversation_is_told_only_to_those_who_may_see_it(alice, bob, carol, workspace):
    """bob (member) and carol (viewer) hear nothing of alice's private conversation; alice
    (its creator) does; once it is shared, everyone does."""
    ws_bob, ws_carol = await workspace_socket(bob, workspace), await workspace_socket(carol, workspace)
    ws_alice = await workspace_socket(alice, workspace)
    for ws in (ws_bob, ws_carol, ws_alice):
        assert (await ws.receive_json_from(5))["type"] == "workspace.sync"
    conv = await sync_to_async(Conversation.objects.create)(
        workspace=workspace, creator=alice, title="Salaries", visibility=Conversation.Visibility.PRIVATE
    )
    assert (await listed(ws_alice))["action"] == "created"
    await nothing_more(ws_bob)
    await nothing_more(ws_carol)

    conv.title = "Salaries 2027"
    await sync_to_async(conv.save)(update_fields=["title"])
    assert (await listed(ws_alice))["action"] == "renamed"
    await nothing_more(ws_bob)

    conv.visibility = Conversation.Visibility.SHARED
    await sync_to_async(conv.save)(update_fields=["visibility"])
    for ws in (ws_bob, ws_carol, ws_alice):
        assert (await listed(ws))["action"] == "visibility"
    for ws in (ws_bob, ws_carol, ws_alice):
        await ws.disconnect()


async def test_a_workspace_owner_hears_of_a_members_private_conversation(alice, bob, workspace):
    ws = await workspace_socket(alice, workspace)
    assert (await ws.receive_json_from(5))["type"] == "workspace.sync"
    await sync_to_async(Conversation.objects.create)(
        workspace=workspace, creator=bob, visibility=Conversation.Visibility.PRIVATE
    )
    event = await listed(ws)
    assert (event["action"], event["by"]) == ("created", "bob")
    await ws.disconnect()


async def test_trash_and_restore_are_told(alice, bob, workspace):
    ws = await workspace_socket(bob, workspace)
    assert (await ws.receive_json_from(5))["type"] == "workspace.sync"
    conv = await sync_to_async(Conversation.objects.create)(workspace=workspace, creator=alice)
    assert (await listed(ws))["action"] == "created"
    conv.deleted_by = alice
    conv.deleted_at = conv.created_at
    await sync_to_async(conv.save)(update_fields=["deleted_at", "deleted_by"])
    event = await listed(ws)
    assert (event["action"], event["by"]) == ("deleted", "alice")
    conv.deleted_at, conv.deleted_by = None, None
    await sync_to_async(conv.save)(update_fields=["deleted_at", "deleted_by"])
    assert (await listed(ws))["action"] == "restored"
    await ws.disconnect()


async def test_another_workspaces_events_do_not_arrive(alice, bob, workspace):
    other = await sync_to_async(Workspace.objects.create)(name="Other", slug="other")
    await sync_to_async(Membership.objects.create)(workspace=other, user=alice)
    ws = await workspace_socket(bob, workspace)
    assert (await ws.receive_json_from(5))["type"] == "workspace.sync"
    await sync_to_async(Conversation.objects.create)(workspace=other, creator=alice)
    await nothing_more(ws)
    await ws.disconnect()


async def test_logged_out_is_4401_and_outsiders_4403(charlie, workspace):
    ws = WebsocketCommunicator(application, f"/ws/workspaces/{workspace.id}/", headers=headers(""))
    await ws.connect(timeout=5)
    assert await closed_with(ws) == 4401
    ws = await open_socket(charlie, f"/ws/workspaces/{workspace.id}/")
    assert await closed_with(ws) == 4403
    ws = await open_socket(charlie, "/ws/workspaces/999999/")
    assert await closed_with(ws) == 4403


async def test_a_removed_member_is_closed_at_once_and_a_changed_role_4409(alice, bob, workspace):
    ws = await workspace_socket(bob, workspace)
    assert (await ws.receive_json_from(5))["type"] == "workspace.sync"
    membership = await sync_to_async(Membership.objects.get)(user=bob, workspace=workspace)
    membership.role = Membership.Role.VIEWER
    await sync_to_async(membership.save)()
    assert await closed_with(ws) == 4409

    ws = await workspace_socket(bob, workspace)
    assert (await ws.receive_json_from(5))["type"] == "workspace.sync"
    await sync_to_async(membership.delete)()
    assert await closed_with(ws) == 4403


async def test_only_ping_is_accepted(bob, workspace):
    ws = await workspace_socket(bob, workspace)
    assert (await ws.receive_json_from(5))["type"] == "workspace.sync"
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(5) == {"type": "pong"}
    await ws.send_to(text_data="hello")
    assert await closed_with(ws) == 4400


# -- presence


async def presence(ws, expected: list[str], timeout: float = 5) -> list[str]:
    """Presence events until one lists `expected` (a viewer's own announcement may come
    first); times out when none does."""
    while True:
        event = await ws.receive_json_from(timeout)
        if event["type"] == "presence" and event["viewers"] == expected:
            return event["viewers"]


async def test_presence_lists_the_others_viewing_and_drops_who_left(alice, bob, carol, conversation):
    path = f"/ws/conversations/{conversation.id}/"
    ws_alice = await open_socket(alice, path)
    assert (await ws_alice.receive_json_from(5))["type"] == "sync"
    await nothing_more(ws_alice)  # alone: no presence event
    ws_bob = await open_socket(bob, path)
    assert await presence(ws_bob, ["alice"]) == ["alice"]
    assert await presence(ws_alice, ["bob"]) == ["bob"]
    ws_carol = await open_socket(carol, path)
    assert await presence(ws_carol, ["alice", "bob"]) == ["alice", "bob"]
    assert await presence(ws_alice, ["bob", "carol"]) == ["bob", "carol"]
    # A second tab of alice's is not "someone else" for alice, and counts once for others.
    ws_alice2 = await open_socket(alice, path)
    assert await presence(ws_alice2, ["bob", "carol"]) == ["bob", "carol"]
    await ws_carol.disconnect()
    assert await presence(ws_alice, ["bob"]) == ["bob"]
    assert await presence(ws_bob, ["alice"]) == ["alice"]
    await ws_alice2.disconnect()
    await nothing_more(ws_bob)  # alice is still here in her first tab
    await ws_alice.disconnect()
    assert await presence(ws_bob, []) == []
    await ws_bob.disconnect()


async def test_a_viewer_that_stops_beating_expires(alice, bob, conversation, settings):
    """A viewer whose process died sends no `presence.left`: it is dropped once silent."""
    settings.PRESENCE_SECONDS = 0.2
    path = f"/ws/conversations/{conversation.id}/"
    ws_alice = await open_socket(alice, path)
    assert (await ws_alice.receive_json_from(5))["type"] == "sync"
    await nothing_more(ws_alice)  # alone: no presence event
    await get_channel_layer().group_send(
        events.group_of(conversation.id), events.presence_here("ghost!x", bob.id, "bob")
    )
    assert await presence(ws_alice, ["bob"]) == ["bob"]
    assert await presence(ws_alice, [], timeout=3) == []
    await ws_alice.disconnect()


async def test_no_presence_without_access(charlie, conversation):
    ws = await open_socket(charlie, f"/ws/conversations/{conversation.id}/")
    assert await closed_with(ws) == 4403


async def test_workspace_sync_lists_running_conversations_visible_to_the_user(alice, bob, workspace):
    shared = await sync_to_async(Conversation.objects.create)(workspace=workspace, creator=alice)
    private = await sync_to_async(Conversation.objects.create)(
        workspace=workspace, creator=alice, visibility=Conversation.Visibility.PRIVATE
    )
    for conv in (shared, private):
        await sync_to_async(Run.objects.create)(
            conversation=conv, workspace=workspace, user=alice, status=Run.Status.STREAMING, model="m"
        )
    ws = await workspace_socket(bob, workspace)
    assert await ws.receive_json_from(5) == {"type": "workspace.sync", "running": [shared.id]}
    await ws.disconnect()
    ws = await workspace_socket(alice, workspace)
    assert await ws.receive_json_from(5) == {
        "type": "workspace.sync",
        "running": sorted([shared.id, private.id]),
    }
    await ws.disconnect()


# -- across two Daphne processes on PostgreSQL + Redis


@pytest.fixture
def cluster():
    from tests.servers import AppServer, app_database

    with (
        app_database("postgres", redis=True, PLAYGROUND_PRESENCE_SECONDS="0.5") as env,
        AppServer(env) as first,
        AppServer(env) as second,
    ):
        yield first, second


async def real_socket(client, path: str):
    import websockets

    url = client.url.replace("http://", "ws://") + path
    return await websockets.connect(
        url, additional_headers={"Cookie": client.cookie_header, "Origin": client.url}
    )


async def next_of(ws, kind: str, timeout: float = 15, **match) -> dict:
    """The next event of type `kind` whose fields equal `match`, skipping others."""
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
            return event


@pytest.mark.scaleout
async def test_across_processes_the_list_and_presence_are_live(cluster):
    from tests.servers import Client, add_member

    first, second = cluster
    add_member(first.env, "bob", "bob-password-123")
    admin_on_second = Client(second.url)
    bob_on_first = Client(first.url, "bob", "bob-password-123")
    config = re.search(
        r'id="playground-config" type="application/json">(.*?)</script>', bob_on_first.get("/").text
    )
    workspace = json.loads(config.group(1))["workspace"]
    page = await real_socket(bob_on_first, f"/ws/workspaces/{workspace}/")
    assert await next_of(page, "workspace.sync") == {"type": "workspace.sync", "running": []}

    # A conversation created through the second process reaches a page on the first.
    conv = admin_on_second.new_conversation()
    event = await next_of(page, "conversation.listed", conversation=conv)
    assert (event["action"], event["by"]) == ("created", "admin")

    # A run started and ended through the second process: one event each.
    submitted = admin_on_second.submit(conv, admin_on_second.demo_provider(), "hi", model="demo-echo")
    assert submitted.status_code == 201
    started = await next_of(page, "conversation.listed", conversation=conv, action="run.started")
    assert started["by"] == "admin"
    await next_of(page, "conversation.listed", conversation=conv, action="run.done")
    listed = bob_on_first.get("/api/conversations/").json()["conversations"]
    assert [c["title"] for c in listed if c["id"] == conv] == ["hi"]

    # Presence spans the processes: admin views through the second, bob through the first.
    path = f"/ws/conversations/{conv}/"
    admin_view = await real_socket(admin_on_second, path)
    bob_view = await real_socket(bob_on_first, path)
    assert (await next_of(bob_view, "presence", viewers=["admin"]))["viewers"] == ["admin"]
    assert (await next_of(admin_view, "presence", viewers=["bob"]))["viewers"] == ["bob"]
    await bob_view.close()
    await next_of(admin_view, "presence", viewers=[])

    # A process killed with a viewer on it leaves no ghost: the viewer expires.
    bob_view = await real_socket(bob_on_first, path)
    await next_of(admin_view, "presence", viewers=["bob"])
    first.kill()
    await next_of(admin_view, "presence", viewers=[], timeout=10)
    await admin_view.close()

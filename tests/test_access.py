"""Issue 15 §3: access ends when it is taken away, and bad websocket frames close cleanly.

In one process through playground.asgi.application; the two-process versions (Redis)
are in tests/test_scaleout.py.
"""

import logging

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from playground.models import Membership, Workspace
from playground.relay import events
from tests.test_relay import post, session_cookie, watch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def clean_layer():
    await get_channel_layer().flush()


async def cookie(user) -> str:
    return await sync_to_async(session_cookie)(user)


async def closed_with(ws, timeout: float = 5) -> int:
    """The close code of the socket, skipping frames sent before it."""
    while True:
        output = await ws.receive_output(timeout)
        if output["type"] == "websocket.close":
            return output.get("code")


async def test_issue15_3_logout_closes_that_sessions_sockets(alice, bob, conversation):
    alice_cookie, other_session = await cookie(alice), await cookie(alice)
    ws, other = await watch(alice_cookie, conversation), await watch(other_session, conversation)
    status, _ = await post(alice_cookie, "/accounts/logout/")
    assert status == 302
    assert await closed_with(ws) == 4401
    assert await other.receive_nothing(timeout=0.5)  # the session still logged in keeps its socket
    await other.disconnect()


async def test_issue15_3_removing_a_membership_closes_the_users_sockets_at_once(alice, bob, conversation):
    ws = await watch(await cookie(bob), conversation)
    await sync_to_async(Membership.objects.filter(user=bob).delete)()
    assert await closed_with(ws) == 4403


async def test_issue15_3_a_role_change_closes_the_users_sockets_to_reconnect_under_it(
    alice, bob, conversation
):
    ws = await watch(await cookie(bob), conversation)
    membership = await sync_to_async(Membership.objects.get)(user=bob)
    membership.role = Membership.Role.VIEWER  # viewers may still read: 4409, the page reconnects
    await sync_to_async(membership.save)()
    assert await closed_with(ws) == 4409
    again = await watch(await cookie(bob), conversation)
    await again.disconnect()


async def test_issue15_3_the_timer_finds_access_taken_away_without_a_signal(
    settings, alice, bob, conversation
):
    """A change that sends no signal (a queryset update, another tool writing the table)."""
    settings.WS_RECHECK_SECONDS = 0.2
    ws = await watch(await cookie(bob), conversation)
    other = await sync_to_async(Workspace.objects.create)(name="Other", slug="other")
    await sync_to_async(Membership.objects.filter(user=bob).update)(workspace=other)
    assert await closed_with(ws, timeout=5) == 4403


async def test_issue15_3_a_run_starting_checks_access_before_its_events_are_sent(
    settings, alice, bob, conversation
):
    settings.WS_RECHECK_SECONDS = 3600
    ws = await watch(await cookie(bob), conversation)
    other = await sync_to_async(Workspace.objects.create)(name="Other", slug="other")
    await sync_to_async(Membership.objects.filter(user=bob).update)(workspace=other)  # no signal
    started = {"type": "run.started", "run": {"id": 1}, "seq": 0}
    await get_channel_layer().group_send(events.group_of(conversation.id), started)
    assert await closed_with(ws) == 4403  # and not the event before it


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '{"type": "subscribe"}', b"\x00\x01"])
async def test_issue15_3_bad_websocket_frames_close_4400_with_one_warning(alice, conversation, caplog, frame):
    ws = await watch(await cookie(alice), conversation)
    caplog.set_level(logging.INFO)
    if isinstance(frame, bytes):
        await ws.send_to(bytes_data=frame)
    else:
        await ws.send_to(text_data=frame)
    assert await closed_with(ws) == 4400
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in logged] == [("playground.consumers", "WARNING")]
    assert logged[0].exc_info is None

"""The trimmed in-memory channel layer, and the websocket stack's session middleware."""

import asyncio

import pytest

from playground.server.memory_layer import InMemoryChannelLayer
from tests.fastpaths import needs


@needs("memory_layer")
async def test_a_receiver_keeps_its_queue_between_messages_and_leaves_nothing_when_it_stops():
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("watchers", channel)

    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    queue = layer.channels[channel]
    layer.group_send_now("watchers", {"type": "one"})
    assert (await waiting)["type"] == "one"
    assert layer.channels[channel] is queue  # not dropped and rebuilt for the next message

    layer.group_send_now("watchers", {"type": "two"})  # sent while nobody waits: kept
    assert (await layer.receive(channel))["type"] == "two"

    stopped = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    stopped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopped
    assert channel not in layer.channels  # a closed consumer's queue goes with it


@needs("memory_layer")
async def test_a_stopped_receiver_with_messages_queued_keeps_them():
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    waiting.cancel()
    await layer.send(channel, {"type": "late"})  # arrives as the wait is being cancelled
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await layer.receive(channel))["type"] == "late"


@needs("memory_layer")
async def test_a_receiver_that_stops_between_messages_leaves_nothing_after_the_sweep():
    """A consumer closed while it handles a message (not while it waits) never cancels a
    wait: its empty queue goes at the layer's next once-a-second sweep."""
    layer = InMemoryChannelLayer()
    gone, staying = await layer.new_channel(), await layer.new_channel()
    await layer.send(gone, {"type": "last"})
    assert (await layer.receive(gone))["type"] == "last"  # ... and no receive() after it
    waiting = asyncio.ensure_future(layer.receive(staying))
    await asyncio.sleep(0)
    layer._cleaned_at = 0.0  # as if a second had passed
    layer._clean_expired()
    assert gone not in layer.channels
    assert staying in layer.channels  # waited on: kept, and the message still arrives
    await layer.send(staying, {"type": "hello"})
    assert (await waiting)["type"] == "hello"


@needs("memory_layer")
async def test_names_are_still_checked():
    layer = InMemoryChannelLayer()
    with pytest.raises(TypeError):
        layer.group_send_now("not a valid group name!", {"type": "x"})
    with pytest.raises(TypeError):
        await layer.receive("not valid!either")
    layer.group_send_now("nobody-here", {"type": "x"})  # a valid group without members: nothing to do

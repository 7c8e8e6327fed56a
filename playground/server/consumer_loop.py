"""Fast path `consumer_loop`: the conversation consumer reads each source in a loop of its own.

channels' `AsyncConsumer.__call__` waits on the client's messages and the channel
layer's together (`await_many_dispatch`: `asyncio.wait(FIRST_COMPLETED)` and new tasks
per message). `consumer_call` sets up the consumer as channels does (scope, channel
layer, channel name, `channel_receive`, `base_send`), then runs one reading loop per
source; `ConversationConsumer.dispatch` handles one message at a time (its lock), in
order per source, as channels does. `StopConsumer` ends both loops.

Its `install()` checks that channels' `AsyncConsumer.__call__` is still the code this
replaces (the names it uses), then sets `ConversationConsumer.__call__`.
"""

import asyncio
import functools

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from playground.server import checks

NAME = "fast path consumer_loop"

CHANNELS_CALL_NAMES = (
    "StopConsumer",
    "_sync",
    "async_to_sync",
    "await_many_dispatch",
    "base_send",
    "channel_layer",
    "channel_layer_alias",
    "channel_name",
    "channel_receive",
    "dispatch",
    "functools",
    "get_channel_layer",
    "new_channel",
    "partial",
    "receive",
    "scope",
)


async def consumer_call(self, scope, receive, send) -> None:
    """channels' AsyncConsumer.__call__ for an async consumer with a channel layer, with
    one reading loop per source."""
    self.scope = scope
    self.channel_layer = get_channel_layer(self.channel_layer_alias)
    self.channel_name = await self.channel_layer.new_channel()
    self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
    self.base_send = send

    async def pump(source) -> None:
        while True:
            await self.dispatch(await source())

    pumps = [asyncio.ensure_future(pump(receive)), asyncio.ensure_future(pump(self.channel_receive))]
    try:
        done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    except StopConsumer:
        pass
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


def missing() -> list[str]:
    found = checks.names_used(AsyncConsumer.__call__, CHANNELS_CALL_NAMES)
    found += checks.parameters(AsyncConsumer.__call__, ("self", "scope", "receive", "send"))
    return found


def install() -> bool:
    """Serve the conversation consumer with `consumer_call`; idempotent."""
    from playground.consumers import ConversationConsumer

    if ConversationConsumer.__call__ is consumer_call:
        return True
    if problems := missing():
        return checks.refuse(NAME, problems)
    ConversationConsumer.__call__ = consumer_call
    return True

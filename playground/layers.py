"""The in-memory channel layer, trimmed for relaying many small events.

channels' InMemoryChannelLayer, measured with benchmarks/relay.py and a micro
benchmark of send -> receive -> dispatch, spends most of its time on work this
app does not need per message:

- `_clean_expired` walks every message of every channel and group on every
  send, receive and group_send: O(connections) per message. Expiry (60 s by
  default) only needs checking about once a second.
- `group_send` starts one task per member and waits for them with
  `as_completed`, although an in-memory send never waits: send in turn instead.
- `send` deep-copies every message for every receiver. Messages here are built
  once by the sender and only read by receivers (consumers serialise them), so
  each receiver gets the same dict: treat received messages as read-only.
- `receive` builds a new queue on every call (as `setdefault`'s argument), and
  `group_send` checks every member's name again with a regular expression,
  although `group_add` checked it.
"""

import asyncio
import contextlib
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    clean_interval = 1.0
    _cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= self.clean_interval:
            self._cleaned_at = now
            super()._clean_expired()

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._put(channel, message)

    def _queue(self, channel: str) -> asyncio.Queue:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        return queue

    def _put(self, channel: str, message: dict) -> None:
        queue = self._queue(channel)
        try:
            queue.put_nowait((time.time() + self.expiry, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group: str, message: dict) -> None:
        self.group_send_now(group, message)

    def group_send_now(self, group: str, message: dict) -> None:
        """group_send without awaiting: on the layer's loop, delivered when it returns."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            # As channels does, a full receiver misses the message (consumers detect the gap).
            with contextlib.suppress(ChannelFull):
                self._put(channel, message)

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
  drops the channel's queue whenever it empties, so the next message builds
  another. Here a channel keeps its queue while its receiver comes back for
  more; an empty queue that nobody waits on goes when its receiver's wait is
  cancelled (as when a consumer closes), or at the next once-a-second sweep
  (a receiver that stopped between messages); messages expire as in channels.
- `group_send` and `receive` check names with regular expressions for every
  message: a group exists only if `group_add` checked its name, and a channel
  has a queue only if its name was checked, so each name is checked once.
"""

import asyncio
import contextlib
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    clean_interval = 1.0
    _cleaned_at = 0.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: dict[str, int] = {}  # channel -> receive() calls waiting on it

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= self.clean_interval:
            self._cleaned_at = now
            super()._clean_expired()
            for channel in list(self.channels):
                self._drop_if_idle(channel)

    def _drop_if_idle(self, channel: str) -> None:
        """Forget the channel's queue when it holds nothing and no receive() waits on it."""
        queue = self.channels.get(channel)
        if queue is not None and queue.empty() and not self._waiting.get(channel):
            del self.channels[channel]

    def _done_waiting(self, channel: str) -> None:
        if (left := self._waiting[channel] - 1) > 0:
            self._waiting[channel] = left
        else:
            del self._waiting[channel]

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
        self._clean_expired()  # first: the sweep must not take the queue this call waits on
        queue = self.channels.get(channel)
        if queue is None:
            self.require_valid_channel_name(channel)
            queue = self._queue(channel)
        self._waiting[channel] = self._waiting.get(channel, 0) + 1
        try:
            _, message = await queue.get()
        except BaseException:  # the receiver stopped waiting: its queue goes unless it holds messages
            self._done_waiting(channel)
            self._drop_if_idle(channel)
            raise
        self._done_waiting(channel)
        return message

    async def group_send(self, group: str, message: dict) -> None:
        self.group_send_now(group, message)

    def group_send_now(self, group: str, message: dict) -> None:
        """group_send without awaiting: on the layer's loop, delivered when it returns."""
        assert isinstance(message, dict), "message is not a dict"
        members = self.groups.get(group)
        if members is None:  # group_add checked the names of the groups it made
            self.require_valid_group_name(group)
            return
        self._clean_expired()
        for channel in list(members):
            # As channels does, a full receiver misses the message (consumers detect the gap).
            with contextlib.suppress(ChannelFull):
                self._put(channel, message)

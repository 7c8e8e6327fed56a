"""Fast path `memory_layer`: channels' in-memory channel layer, trimmed for many small events.

Settings name this class as the in-memory layer when `memory_layer` is on
(settings.IN_MEMORY_CHANNEL_LAYER); otherwise channels' own. Differences from channels'
layer, all within the layer API:

- expired messages are swept at most once a second (`clean_interval`), not on every
  send, receive and group_send;
- `group_send` puts the message in each member's queue in turn, without a task per
  member; `group_send_now` does that without awaiting (on the layer's loop, delivered
  when it returns): playground.relay uses it when the layer has it;
- every receiver gets the same message dict, not a deep copy: received messages are
  read-only;
- a channel keeps its queue while its receiver comes back for more; an empty queue
  nobody waits on goes when its receiver's wait is cancelled, or at the next sweep;
- a name is checked once: a group exists only if `group_add` checked its name, a
  channel has a queue only if its name was checked.

As in channels, a full receiver misses the message (consumers detect the gap), and
messages expire after `expiry` seconds.

Its `install()` checks channels' version range and the attributes the subclass uses;
if they changed it logs one warning and the settings go back to channels' layer.
"""

import asyncio
import contextlib
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer

from playground.server import checks

NAME = "fast path memory_layer"
STOCK = "channels.layers.InMemoryChannelLayer"
OURS = f"{__name__}.InMemoryChannelLayer"


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


def missing() -> list[str]:
    # Queue items are (expiry time, message), read by channels' _clean_expired: its code
    # and the version range it was read in.
    found = checks.version("channels", (4, 3), (4, 4))
    found += checks.attributes(
        ChannelsInMemoryChannelLayer,
        ("_clean_expired", "get_capacity", "require_valid_channel_name", "require_valid_group_name"),
    )
    found += checks.sets(ChannelsInMemoryChannelLayer.__init__, ("channels", "groups"))
    if not found:
        probe = ChannelsInMemoryChannelLayer()
        found += checks.attributes(probe, ("channels", "groups", "expiry"))
    return found


def use_stock_layer() -> None:
    """Point the layers that name this class at channels' own."""
    from channels.layers import channel_layers
    from django.conf import settings

    for alias, config in settings.CHANNEL_LAYERS.items():
        if config.get("BACKEND") == OURS:
            config["BACKEND"] = STOCK
            channel_layers.backends.pop(alias, None)


def install() -> bool:
    """Check channels' layer; the settings already name this class when the switch does."""
    if problems := missing():
        use_stock_layer()
        return checks.refuse(NAME, problems)
    return True

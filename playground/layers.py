"""The in-memory channel layer, without its per-message full scan.

channels' InMemoryChannelLayer calls `_clean_expired` on every send, receive and
group_send, and that walks every message of every channel and every group:
O(connections) work per message. Measured with benchmarks/relay.py it was a
large share of the event loop's time at 50 streams; expiry (60 s by default)
only needs checking about once a second.
"""

import time

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    clean_interval = 1.0
    _cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= self.clean_interval:
            self._cleaned_at = now
            super()._clean_expired()

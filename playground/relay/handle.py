"""One run in this process: its request, its numbered deltas, its end.

A RunHandle lives on three sides. Its relay thread (`execute`) opens the
request, waits while the server loop reads the stream (or reads it itself when
only blocking reads can), and writes the final state. The loop numbers each
coalesced batch of deltas with `seq` and publishes it through one sender task
per run, so events leave in order. The keeper thread asks it for checkpoints.
`lock` guards what they share: the pending deltas, `seq`, `status`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from playground.keys import Secret
from playground.models import Run, cost_of
from playground.relay import events
from playground.relay.store import record_usage, save_answer, settle_connection
from playground.upstream.accumulate import Accumulator
from playground.upstream.errors import Cancelled, UpstreamError
from playground.upstream.http import CancelToken, Deadlines
from playground.upstream.stream import ChatStream

if TYPE_CHECKING:
    from playground.relay.control import Process

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where a run's request goes: base URL, key and headers (the key is never logged).
    `is_demo`: the built-in Demo relay, which is this server (see playground.netguard)."""

    base_url: str
    api_key: Secret = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    is_demo: bool = False


_telling: set[asyncio.Task] = set()


class RunHandle:
    def __init__(self, run: Run, target: Target, slot, owner: Process) -> None:
        self.run = run  # with its conversation, user and provider, as the submission loaded them
        self.run_id = run.id
        self.group = events.group_of(run.conversation_id)
        self.body = run.request_body
        self.target = target
        self.slot = slot
        self.owner = owner
        self.loop: asyncio.AbstractEventLoop = owner.loop
        self.cancel = CancelToken()
        self.acc = Accumulator()
        self.lock = threading.Lock()
        self.seq = 0
        self.status = Run.Status.QUEUED
        self.pending: dict[int, dict] = {}
        self.sealed: list[dict] = []
        self.flush_scheduled = False
        self.last_flush = 0.0
        self.window = settings.RELAY_COALESCE_MS / 1000
        self.max_output_chars = settings.RELAY_MAX_OUTPUT_CHARS  # read per chunk: not through settings
        self.t0_wall = run.submitted_at
        self.t0_mono = time.monotonic()
        self.first_reasoning_at: float | None = None
        self.first_content_at: float | None = None
        self.output_chars = 0
        self.checkpointed_seq = -1  # nothing stored yet: the first checkpoint stores the status
        self.finishing = False
        # Set by begin(), on the loop: deltas sealed before it wait for run.started (and the
        # sender). A relay thread can read its first chunks before the loop runs begin(), and
        # Process.wake may flush this run in a batch scheduled ahead of begin().
        self.begun = False

    # -- on the event loop

    def begin(self, run_dict: dict, messages: list[dict]) -> None:
        self.start_sender()
        self._publish(events.run_started(run_dict, messages))
        self.begun = True
        self._flush()  # what was sealed before: after run.started, numbered from 1
        self._tell_workspace("run.started")

    def _tell_workspace(self, action: str) -> None:
        """One `conversation.listed` to the workspace's group (at the run's start and end)."""
        run = self.run
        group = events.workspace_group(run.conversation.workspace_id)
        event = events.conversation_listed(
            run.conversation, action, run.user.get_username() if run.user else None
        )
        task = self.loop.create_task(get_channel_layer().group_send(group, event))
        _telling.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_telling.discard)

    def start_sender(self) -> None:
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.sender = self.loop.create_task(self._send_forever())
        # A layer that delivers without awaiting (`group_send_now`, playground.server.memory_layer):
        # then an event goes out at once when none is queued before it.
        self.send_now = getattr(get_channel_layer(), "group_send_now", None)

    def _publish(self, event: dict) -> None:
        if self.send_now is None or not self.outbox.empty():
            self.outbox.put_nowait(event)
            return
        try:
            self.send_now(self.group, event)
        except Exception:
            log.exception("run %s: could not publish an event", self.run_id)

    async def _send_forever(self) -> None:
        layer = get_channel_layer()
        while (event := await self.outbox.get()) is not None:
            try:
                await layer.group_send(self.group, event)
            except Exception:
                log.exception("run %s: could not publish an event", self.run_id)

    def _schedule_flush(self) -> None:
        delay = self.last_flush + self.window - self.loop.time()
        if delay > 0:
            self.loop.call_later(delay, self._flush)
        else:
            self._flush()

    def _flush(self) -> None:
        self.last_flush = self.loop.time()
        with self.lock:
            self.flush_scheduled = False
            if not self.begun:  # begin() flushes them, after run.started
                return
            self._seal()
            sealed, self.sealed = self.sealed, []
        for event in sealed:
            self._publish(event)

    async def _publish_done(self, event: dict) -> None:
        self._flush()
        self._publish(event)
        self.outbox.put_nowait(None)
        self._tell_workspace("run.done")
        await self.sender

    def snapshot(self) -> dict:
        with self.lock:
            self._seal()
            return {"run": self.run_id, "seq": self.seq, "status": self.status, "choices": self.acc.state()}

    # -- shared: called with self.lock held

    def _seal(self) -> None:
        """Close the pending batch under the next seq, so a snapshot can name it."""
        if not self.pending:
            return
        self.seq += 1
        choices = []
        for index, parts in sorted(self.pending.items()):
            delta = {"index": index}
            for name in ("content", "reasoning"):
                if parts.get(name):
                    delta[name] = "".join(parts[name])
            for name in ("tool_calls", "logprobs"):
                if parts.get(name):
                    delta[name] = parts[name]
            if parts.get("finish_reason"):
                delta["finish_reason"] = parts["finish_reason"]
            choices.append(delta)
        self.sealed.append(events.run_delta(self.run_id, self.seq, choices))
        self.pending = {}

    # -- on the relay thread (and, while the loop reads the stream, `_take_on_loop` and
    # `_add` on the loop)

    def execute(self) -> None:
        outcome, error = Run.Status.FAILED, None
        settle_connection()  # one this thread kept from its last run: still usable and young?
        try:
            self._mark_streaming()
            self._stream()
            outcome = Run.Status.COMPLETED
        except Cancelled:
            outcome = Run.Status.STOPPED
        except UpstreamError as exc:
            error = exc
        except Exception as exc:  # a bug must still end the run, never spin forever
            log.exception("run %s failed inside the relay", self.run_id)
            error = UpstreamError(f"The playground failed while relaying ({type(exc).__name__}).")
            error.kind = "internal"
        finally:
            try:
                self._finish(outcome, error)
            finally:
                self.owner.runs.pop(self.run_id, None)
                self.slot.release()
                settle_connection()

    def _mark_streaming(self) -> None:
        # Only in memory: the keeper's next checkpoint (within a second) stores it, so a
        # relay thread touches the database once, at the end.
        with self.lock:
            self.status = Run.Status.STREAMING

    def _stream(self) -> None:
        stream = ChatStream(
            base_url=self.target.base_url,
            api_key=self.target.api_key,
            body=self.body,
            extra_headers=self.target.headers,
            deadlines=Deadlines.from_settings(),
            cancel=self.cancel,
            max_retries=settings.UPSTREAM_MAX_RETRIES,
            max_retry_wait=settings.UPSTREAM_MAX_RETRY_WAIT,
            demo=self.target.is_demo,
        )
        self.stream = stream
        stream.open()
        try:
            reading = stream.read_on_loop(self.loop, self._take_on_loop) if self.loop.is_running() else None
            if reading is None:
                for chunk in stream.read():
                    self._take(chunk)
            else:
                self._wait(reading)
        finally:
            stream.close()

    def _take(self, chunk: dict, on_loop: bool = False) -> None:
        deltas = self.acc.apply(chunk)
        if deltas:
            self._add(deltas, on_loop)

    def _take_on_loop(self, chunk: dict) -> None:
        self._take(chunk, on_loop=True)

    def _wait(self, reading: concurrent.futures.Future) -> None:
        """Wait while the loop reads the stream; its end (or error) is the run's."""
        while True:
            try:
                return reading.result(timeout=1)
            except TimeoutError:
                if reading.done():  # the stream's own error
                    raise
                if not self.loop.is_running():
                    self.cancel.cancel()
                    raise UpstreamError("The server stopped while this answer was streaming.") from None

    def _add(self, deltas: list[dict], on_loop: bool = False) -> None:
        if self.first_content_at is None:
            self._note_first_tokens(deltas)
        schedule = False
        with self.lock:
            for delta in deltas:
                parts = self.pending.setdefault(delta["index"], {})
                for name in ("content", "reasoning", "tool_calls", "logprobs"):
                    if name in delta:
                        parts.setdefault(name, []).extend(
                            delta[name] if isinstance(delta[name], list) else (delta[name],)
                        )
                        if name == "content":
                            self.output_chars += len(delta[name])
                if "finish_reason" in delta:
                    parts["finish_reason"] = delta["finish_reason"]
            if not self.flush_scheduled:
                self.flush_scheduled = schedule = True
        if schedule:
            if on_loop:
                self._schedule_flush()
            else:
                self.owner.wake(self)
        if self.output_chars > self.max_output_chars:
            raise UpstreamError(
                f"The answer passed the {self.max_output_chars:,} character limit "
                "(PLAYGROUND_MAX_OUTPUT_CHARS) and was cut there."
            )

    def _note_first_tokens(self, deltas: list[dict]) -> None:
        """First token of reasoning, and of the answer proper (text or a tool call)."""
        now = time.monotonic()
        if self.first_reasoning_at is None and any("reasoning" in d for d in deltas):
            self.first_reasoning_at = now
        if any("content" in d or "tool_calls" in d for d in deltas):
            self.first_content_at = now

    def _firsts(self) -> dict:
        """The first token of any kind is whichever of the two came first."""
        firsts = [t for t in (self.first_reasoning_at, self.first_content_at) if t is not None]
        return {
            "first_token_at": self._wall(min(firsts, default=None)),
            "first_reasoning_at": self._wall(self.first_reasoning_at),
            "first_content_at": self._wall(self.first_content_at),
        }

    def _wall(self, moment: float | None):
        return self.t0_wall + timedelta(seconds=moment - self.t0_mono) if moment else None

    def checkpoint_state(self) -> dict | None:
        """What the keeper thread writes for this run (store.CHECKPOINT_FIELDS but the
        heartbeat): None when nothing is new since last time.

        Seals the pending batch first, so the stored (text, seq) pair names a batch
        that is (or is about to be) published.
        """
        with self.lock:
            if self.status != Run.Status.STREAMING or self.finishing:
                return None
            self._seal()
            if self.seq == self.checkpointed_seq:
                return None
            self.checkpointed_seq = self.seq
            flush = bool(self.sealed) and not self.flush_scheduled
            if flush:
                self.flush_scheduled = True
            state = {"status": self.status, "output": self.acc.state(), "last_seq": self.seq}
        if flush:
            self.owner.wake(self)
        stream = getattr(self, "stream", None)
        state["first_byte_at"] = self._wall(stream.first_byte_at if stream else None)
        state.update(self._firsts())
        return state

    def _finish(self, outcome: str, error: UpstreamError | None) -> None:
        with self.lock:
            self._seal()
            # Until run.done is out, a snapshot still says the run is active, numbered below
            # it: a page that connects meanwhile must take run.done as news, not as a repeat.
            self.finishing = True
            done_seq, choices = self.seq + 1, self.acc.state()
        # The row as submitted: while a run is active nothing else writes the fields below
        # (turn edits wait for it to end), so it is not read again.
        run = self.run
        stream = getattr(self, "stream", None)
        run.status = outcome
        run.output = choices
        run.finish_reasons = [c["finish_reason"] for c in choices]
        run.last_seq = done_seq
        run.finished_at = timezone.now()
        run.first_byte_at = self._wall(stream.first_byte_at if stream else None)
        for name, moment in self._firsts().items():
            setattr(run, name, moment)
        run.response_status = stream.status if stream else None
        if stream:
            run.response_headers = stream.response_headers
            run.raw_frames, run.frames_dropped = stream.frames, stream.frames_dropped
            run.decode_errors = stream.decode_errors
        if error is not None:
            run.error_kind, run.error_message = error.kind, error.message
        record_usage(run, self.acc, reached=bool(stream and stream.reached))
        run.cost_usd = cost_of(
            run.provider.prices if run.provider else {},
            run.model,
            run.prompt_tokens,
            run.completion_tokens,
            run.cached_tokens,
        )
        messages = save_answer(run)
        event = events.run_done(run, messages)
        try:
            asyncio.run_coroutine_threadsafe(self._publish_done(event), self.loop).result(timeout=10)
        except Exception:
            log.warning("run %s: the final event could not be published", self.run_id)

"""Runs one generation: upstream chunks -> run state -> channel-layer events.

Each run has a thread of a dedicated, capped pool (never the default executor
or default `sync_to_async`, which share a handful of threads). The thread sends
the request; the server's event loop then reads the event stream
(`ChatStream.read_on_loop`) while the thread waits, so no thread per stream
takes turns at the GIL for each chunk. (Bodies only `read()` can take, JSON
answers and compressed streams, are read on the thread, which hands the loop at
most one wake-up per coalescing window.) Chunks fold into an
`Accumulator`; the loop numbers each coalesced batch with `seq` and publishes it
to the conversation's group through one sender task per run, so events leave in
order. At the end the thread writes the final state and publishes a `run.done`
event carrying all of it.

Every process owns a control channel on the channel layer: Stop requests and
snapshot requests for a run reach the process that runs it through there. A
keeper thread checkpoints the text (with its `seq`) of all the process's runs
about once a second, in one transaction, and keeps them marked alive. Runs whose heartbeat
stopped (their process died) are reconciled as `interrupted` by any process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from playground.keys import Secret
from playground.models import Conversation, Message, Run, cost_of, update_of, update_sql
from playground.schema_verdicts import output_checks
from playground.tokens import count_prompt_tokens, count_tokens
from playground.upstream import (
    Accumulator,
    Cancelled,
    CancelToken,
    ChatStream,
    Deadlines,
    UpstreamError,
)

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = (
    "The server process running this answer stopped before it finished; the text saved up to then is kept."
)


class RelayBusy(Exception):
    message = "The playground is busy: too many answers are streaming. Try again in a moment."


# ---------------------------------------------------------------------------- starting a run


def reserve_slot() -> threading.BoundedSemaphore:
    """Claim one of the capped stream slots, or raise RelayBusy at once."""
    slots = process.slots
    if not slots.acquire(blocking=False):
        raise RelayBusy()
    return slots


@dataclass(frozen=True)
class Target:
    """Where a run's request goes: base URL, key and headers (the key is never logged).
    `is_demo`: the built-in Demo relay, which is this server (see playground.netguard)."""

    base_url: str
    api_key: Secret = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    is_demo: bool = False


def start_run(
    run: Run, run_dict: dict, target: Target, slot: threading.BoundedSemaphore, messages: list[dict]
) -> None:
    """Register the run in this process and start streaming it on the relay pool.

    Called from the submitting request's thread, after the Run row committed, with
    this process started (`ensure_started_from_thread`); `slot` comes from
    `reserve_slot()` and is released when the run ends. It returns without waiting
    for the loop: under load each wait for it was a queue behind every other
    answer's events. The loop starts the run's events (its sender, then
    `run.started`) before anything the relay thread hands it, as both go through
    `call_soon_threadsafe`, in that order.

    What a request's thread hands the loop runs in a context of its own (here, in
    `publish_soon` and in `Process.ensure_started`): tasks would otherwise inherit
    the request's asgiref `ThreadSensitiveContext`, which ends with the request,
    and any thread-sensitive call they made after it would raise.
    """
    handle = RunHandle(run, target, slot, process.loop)
    process.runs[run.id] = handle
    try:
        handle.loop.call_soon_threadsafe(handle.begin, run_dict, messages, context=contextvars.Context())
        process.executor.submit(handle.execute)
    except BaseException:  # the loop or the pool is shutting down: the stale-run sweep ends it
        process.runs.pop(run.id, None)
        slot.release()
        raise


def ensure_started_from_thread() -> None:
    """From a request's thread: start this process's relay side on the server loop, once."""
    loop = process.loop
    if loop is None or not process.channel or loop.is_closed() or not loop.is_running():
        async_to_sync(process.ensure_started)()


async def stop_run(run: Run) -> bool:
    """Ask the run to stop, wherever it runs. False when it is not running."""
    handle = process.runs.get(run.id)
    if handle is not None:
        handle.cancel.cancel()
        return True
    if not run.is_active:
        return False
    if run.owner and not is_stale(run):
        await get_channel_layer().send(run.owner, {"type": "run.stop", "run": run.id})
        return True
    await sync_to_async(reconcile_stale_runs)()
    return False


def is_stale(run: Run) -> bool:
    seen = run.heartbeat_at or run.submitted_at
    return timezone.now() - seen > timedelta(seconds=settings.RELAY_STALE_AFTER_SECONDS)


def local_snapshot(run_id: int) -> dict | None:
    handle = process.runs.get(run_id)
    return handle.snapshot() if handle else None


# ---------------------------------------------------------------------------- one run


class RunHandle:
    def __init__(self, run: Run, target: Target, slot, loop) -> None:
        self.run = run  # with its conversation, user and provider, as the submission loaded them
        self.run_id = run.id
        self.group = f"conversation-{run.conversation_id}"
        self.body = run.request_body
        self.target = target
        self.slot = slot
        self.loop: asyncio.AbstractEventLoop = loop
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

    # -- on the event loop

    def begin(self, run_dict: dict, messages: list[dict]) -> None:
        self.start_sender()
        self._publish({"type": "run.started", "run": run_dict, "messages": messages})

    def start_sender(self) -> None:
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.sender = self.loop.create_task(self._send_forever())
        # The in-memory layer delivers without awaiting: then an event goes out at once
        # when none is queued before it, saving the sender task a wake-up per event.
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
            self._seal()
            events, self.sealed = self.sealed, []
        for event in events:
            self._publish(event)

    async def _publish_done(self, event: dict) -> None:
        self._flush()
        self._publish(event)
        self.outbox.put_nowait(None)
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
        self.sealed.append({"type": "run.delta", "run": self.run_id, "seq": self.seq, "choices": choices})
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
                process.runs.pop(self.run_id, None)
                self.slot.release()
                settle_connection()

    def _mark_streaming(self) -> None:
        # Only in memory: the keeper's next checkpoint (within a second) stores it, so a relay
        # thread touches the database once, at the end. At 50 streams on SQLite, this write
        # used to wait up to 1.8 s for the write lock before the request went upstream.
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
                process.wake(self)
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
        """What the keeper thread writes for this run: None when nothing new since last time.

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
            process.wake(self)
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
        event = done_event(run, messages)
        try:
            asyncio.run_coroutine_threadsafe(self._publish_done(event), self.loop).result(timeout=10)
        except Exception:
            log.warning("run %s: the final event could not be published", self.run_id)


def settle_connection() -> None:
    """Before and after a run, on its relay thread: keep the database connection, or let go.

    A server database (PostgreSQL) gets its connection back: the pool has up to
    PLAYGROUND_MAX_STREAMS threads, and as many idle connections would crowd the
    server. An SQLite connection is a file handle in this process; opening one
    (connect, pragmas, Django's SQL functions) cost 1.3 ms of the 26 ms of CPU a short
    run takes here, so the thread keeps it for its next run, and checks it as Django
    does around a request: closed once unusable or older than CONN_MAX_AGE.
    """
    if connection.vendor == "sqlite" and connection.connection is not None:
        try:
            connection.close_if_unusable_or_obsolete()
            return
        except Exception:  # e.g. it cannot even say whether it is in autocommit: drop it
            pass
    with contextlib.suppress(Exception):
        connection.close()


def done_event(run: Run, messages: list[Message]) -> dict:
    """The last event of a run: its complete state, so a client that missed deltas heals."""
    return {
        "type": "run.done",
        "run": run.to_dict(),
        "seq": run.last_seq,
        "messages": [m.to_dict() for m in messages],
    }


def record_usage(run: Run, acc: Accumulator, reached: bool = True) -> None:
    """Usage as reported by the relay, else an estimate flagged as estimated; none at all
    (no tokens, hence no cost) when the request never `reached` the relay."""
    if not reached:
        run.prompt_tokens = run.completion_tokens = run.total_tokens = None
        run.reasoning_tokens = run.cached_tokens = None
        run.usage_estimated = False
        return
    reported = acc.usage
    if reported and reported.completion_tokens is not None:
        run.prompt_tokens = reported.prompt_tokens
        run.completion_tokens = reported.completion_tokens
        run.total_tokens = reported.total_tokens
        if run.total_tokens is None and reported.prompt_tokens is not None:
            run.total_tokens = reported.prompt_tokens + reported.completion_tokens
        run.reasoning_tokens = reported.reasoning_tokens
        run.cached_tokens = reported.cached_tokens
        run.usage_estimated = False
        return
    run.prompt_tokens = count_prompt_tokens(run.request_body.get("messages") or [])
    run.completion_tokens = sum(count_tokens(c["content"]) + count_tokens(c["reasoning"]) for c in run.output)
    run.total_tokens = run.prompt_tokens + run.completion_tokens
    run.usage_estimated = True


# What the end of a run writes; the rest of the row (hidden, position…) is left as it is.
FINAL_FIELDS = [
    "status",
    "output",
    "finish_reasons",
    "last_seq",
    "finished_at",
    "first_byte_at",
    "first_token_at",
    "first_reasoning_at",
    "first_content_at",
    "response_status",
    "response_headers",
    "raw_frames",
    "frames_dropped",
    "decode_errors",
    "error_kind",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "usage_estimated",
    "cost_usd",
    "checks",
]


def save_answer(run: Run) -> list[Message]:
    """Write the final run, with the verdicts on its output, and its answer (one message
    per choice; the first continues)."""
    run.checks = output_checks(run.request_body, run.output)
    final = update_of(run, FINAL_FIELDS)
    touched = update_of(Conversation(id=run.conversation_id, updated_at=timezone.now()), ["updated_at"])
    messages = [
        Message(
            conversation_id=run.conversation_id,
            position=run.position,
            role=Message.Role.ASSISTANT,
            content=choice["content"],
            reasoning=choice["reasoning"],
            tool_calls=choice["tool_calls"],
            run=run,
            choice_index=choice["index"],
            in_history=choice["index"] == min(c["index"] for c in run.output),
        )
        for choice in run.output
        if choice["content"] or choice["tool_calls"] or choice["reasoning"]
    ]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(*final)
            if cursor.rowcount != 1:  # as save(update_fields=...) did: the run was deleted
                raise DatabaseError(f"run {run.id} is gone: its final state was not stored")
            # A deleted conversation leaves its runs in the ledger, with no transcript to add to.
            alive = Conversation.objects.select_for_update().filter(id=run.conversation_id)
            if run.conversation_id is None or not list(alive.values_list("id", flat=True)):
                return []
            cursor.execute(*touched)
        Message.objects.bulk_create(messages)
    if connection.features.can_return_rows_from_bulk_insert:
        return messages  # with their ids, in the order the transcript shows them
    return list(Message.objects.filter(run=run))


# ---------------------------------------------------------------------------- the process


class Process:
    """What one server process owns: its loop, stream slots, runs and control channel."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.channel: str = ""
        self.runs: dict[int, RunHandle] = {}
        self.slots = threading.BoundedSemaphore(settings.RELAY_MAX_STREAMS)
        self.executor = ThreadPoolExecutor(settings.RELAY_MAX_STREAMS, thread_name_prefix="relay")
        self._keeper: threading.Thread | None = None
        self._ready: dict[asyncio.AbstractEventLoop, list[RunHandle]] = {}
        self._ready_lock = threading.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is loop and self.channel:
            return
        async with self._lock_for(loop):
            if self.loop is loop and self.channel:
                return
            layer = get_channel_layer()
            # The default prefix: channels_redis reads every specific channel of a process
            # through one shared queue named after it; another prefix starves the rest.
            self.channel = await layer.new_channel()
            self.loop = loop
            loop.create_task(self._listen(self.channel), context=contextvars.Context())
            self.start_keeper()

    def start_keeper(self) -> None:
        """Start the keeper thread, once per process: called as the server process starts
        (asgi.py), so it reconciles other processes' stale runs within STALE_AFTER whether
        or not this one ever serves a submission."""
        with self._ready_lock:
            if self._keeper is None or not self._keeper.is_alive():
                self._keeper = threading.Thread(target=self._keep, name="relay-keeper", daemon=True)
                self._keeper.start()

    def wake(self, handle: RunHandle) -> None:
        """From a relay thread: have the loop flush this run's pending deltas.

        One wake-up of the loop serves every run that became ready before it ran:
        each `call_soon_threadsafe` writes to the loop's self-pipe, and under load
        these hand-offs were a large part of the cost per chunk (DESIGN trap 5).
        """
        with self._ready_lock:
            ready = self._ready.setdefault(handle.loop, [])
            ready.append(handle)
            if len(ready) > 1:
                return  # a wake-up is already on its way
        handle.loop.call_soon_threadsafe(self._flush_ready, handle.loop)

    def _flush_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._ready_lock:
            ready = self._ready.pop(loop, [])
        for handle in ready:
            handle._schedule_flush()

    def _lock_for(self, loop) -> asyncio.Lock:
        # asyncio.Lock binds to the first loop that waits on it; tests use many loops.
        if self._lock_loop is not loop:
            self._started, self._lock_loop = asyncio.Lock(), loop
        return self._started

    async def _listen(self, channel: str) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A passing channel-layer fault must not leave runs unstoppable.
                log.exception("relay control channel: receive failed; retrying")
                await asyncio.sleep(1)
                continue
            handle = self.runs.get(message.get("run"))
            if message["type"] == "run.stop" and handle:
                handle.cancel.cancel()
            elif message["type"] == "run.snapshot_request":
                reply = {"type": "run.snapshot", "run": message["run"]}
                reply["snapshot"] = handle.snapshot() if handle else None
                await layer.send(message["reply_to"], reply)

    def _keep(self) -> None:
        """The keeper thread: checkpoints and heartbeats for every run of this process.

        One thread and one transaction per tick for all runs, instead of each relay
        thread opening a connection of its own once a second: at 50 streams that was
        50 connections and commits a second, and the largest CPU cost after relaying.
        """
        tick = min(settings.RELAY_CHECKPOINT_SECONDS, settings.RELAY_HEARTBEAT_SECONDS)
        next_beat = time.monotonic() + settings.RELAY_HEARTBEAT_SECONDS
        while True:
            time.sleep(tick)
            try:
                self.checkpoint()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + settings.RELAY_HEARTBEAT_SECONDS
                    if self.runs:
                        Run.objects.filter(id__in=list(self.runs)).update(heartbeat_at=timezone.now())
                    reconcile_stale_runs()
            except Exception as exc:  # the keeper must outlive a database hiccup
                log.warning("relay checkpoint or heartbeat failed: %s", exc)
                with contextlib.suppress(Exception):
                    connection.close()  # the next tick connects afresh
                continue
            if connection.vendor != "sqlite" or not self.runs:  # let go while asleep
                with contextlib.suppress(Exception):
                    connection.close()
            # On SQLite, while this process runs answers, the keeper's connection stays open
            # (idle, it connects afresh each tick, as the database's settings say then).
            # SQLite checkpoints the WAL into
            # the database and deletes it whenever its last connection closes; request and
            # relay threads keep theirs too, but close them once past CONN_MAX_AGE, and with
            # this one open theirs are never the last. Measured when relay threads closed
            # theirs after every run: 36.5 -> 31.3 ms of CPU per sequential run.

    def checkpoint(self) -> None:
        """Store the status and text so far (with its seq) of every streaming run that moved.

        One statement for all runs (executemany), its parameters prepared before the
        transaction: on SQLite every writer waits for this one, so it holds the write lock
        for as short a time as it can.
        """
        handles = list(self.runs.items())
        states = [(run_id, state) for run_id, handle in handles if (state := handle.checkpoint_state())]
        if not states:
            return
        now = timezone.now()
        for _, state in states:
            state["heartbeat_at"] = now
        fields = [Run._meta.get_field(name) for name in states[0][1]]
        rows = [
            [f.get_db_prep_save(state[f.name], connection) for f in fields] + [run_id, *Run.ACTIVE]
            for run_id, state in states
        ]
        # Only while active: the run's own final write is never overwritten.
        sql = update_sql(Run, fields, f" AND status IN ({', '.join(['%s'] * len(Run.ACTIVE))})")
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)


process = Process()


def reconcile_stale_runs() -> list[Run]:
    """Mark runs whose owning process stopped beating as interrupted, keeping their text.

    Safe to run in every process at any time: a run is only touched once its
    heartbeat is older than PLAYGROUND_STALE_AFTER_SECONDS, and the conditional
    update lets exactly one process claim it.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.RELAY_STALE_AFTER_SECONDS)
    stale = Run.objects.filter(status__in=Run.ACTIVE).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, submitted_at__lt=cutoff)
    )
    done = []
    for run in stale.exclude(id__in=list(process.runs)):
        claimed = Run.objects.filter(id=run.id, status__in=Run.ACTIVE, heartbeat_at=run.heartbeat_at)
        if not claimed.update(status=Run.Status.INTERRUPTED):
            continue
        run.status = Run.Status.INTERRUPTED
        run.finished_at = timezone.now()
        run.error_kind, run.error_message = "interrupted", INTERRUPTED_MESSAGE
        run.finish_reasons = [c.get("finish_reason") for c in run.output]
        run.last_seq += 1
        record_usage(run, Accumulator())
        messages = save_answer(run)
        publish_from_thread(f"conversation-{run.conversation_id}", done_event(run, messages))
        log.info("run %s was left streaming by a stopped process; marked interrupted", run.id)
        done.append(run)
    return done


def publish_soon(group: str, event: dict) -> None:
    """group_send from a request's thread, on the server loop, without waiting for it.

    Never raises: the caller has already started a run, and an error now would
    invite the user to submit it again.
    """
    loop, layer = process.loop, get_channel_layer()

    def sent(task: asyncio.Task) -> None:
        _publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not publish %s to %s: %s", event.get("type"), group, task.exception())

    def send() -> None:
        task = loop.create_task(layer.group_send(group, event))
        _publishing.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(sent)

    try:
        loop.call_soon_threadsafe(send, context=contextvars.Context())
    except (AttributeError, RuntimeError):  # no loop, or it has closed
        log.warning("could not publish %s to %s: the server loop is not running", event.get("type"), group)


_publishing: set[asyncio.Task] = set()


def publish_from_thread(group: str, event: dict) -> None:
    """group_send from a thread we own: on the server loop (a new loop loses messages)."""
    loop = process.loop
    if loop is None or loop.is_closed():
        return
    layer = get_channel_layer()
    try:
        asyncio.run_coroutine_threadsafe(layer.group_send(group, event), loop).result(timeout=5)
    except Exception:
        log.warning("could not publish %s to %s", event.get("type"), group)

"""What one server process owns: its loop, stream slots, runs, control channel and keeper.

Runs start on a dedicated, capped pool of relay threads (never the default
executor or `sync_to_async`, which share a handful of threads). Stop and
snapshot requests for a run reach the process that runs it through that
process's control channel on the channel layer. A keeper thread checkpoints the
text (with its `seq`) of all the process's runs about once a second, in one
transaction, and keeps them marked alive; runs whose heartbeat stopped (their
process died) are reconciled as `interrupted` by any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.utils import timezone

from playground.models import Run
from playground.relay import events, store
from playground.relay.handle import RunHandle, Target

log = logging.getLogger(__name__)


class RelayBusy(Exception):
    message = "The playground is busy: too many answers are streaming. Try again in a moment."


# ---------------------------------------------------------------------------- starting a run


def reserve_slot() -> threading.BoundedSemaphore:
    """Claim one of the capped stream slots, or raise RelayBusy at once."""
    slots = process.slots
    if not slots.acquire(blocking=False):
        raise RelayBusy()
    return slots


def start_run(
    run: Run, run_dict: dict, target: Target, slot: threading.BoundedSemaphore, messages: list[dict]
) -> None:
    """Register the run in this process and start streaming it on the relay pool.

    Called from the submitting request's thread, after the Run row committed, with
    this process started (`ensure_started_from_thread`); `slot` comes from
    `reserve_slot()` and is released when the run ends. It returns without waiting
    for the loop. The loop starts the run's events (its sender, then `run.started`)
    before anything the relay thread hands it, as both go through
    `call_soon_threadsafe`, in that order.

    What a request's thread hands the loop runs in a context of its own (here, in
    `publish_soon` and in `Process.ensure_started`): tasks would otherwise inherit
    the request's asgiref `ThreadSensitiveContext`, which ends with the request,
    and any thread-sensitive call they made after it would raise.
    """
    handle = RunHandle(run, target, slot, process)
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
        await get_channel_layer().send(run.owner, events.run_stop(run.id))
        return True
    await sync_to_async(reconcile_stale_runs)()
    return False


def is_stale(run: Run) -> bool:
    seen = run.heartbeat_at or run.submitted_at
    return timezone.now() - seen > timedelta(seconds=settings.RELAY_STALE_AFTER_SECONDS)


def local_snapshot(run_id: int) -> dict | None:
    handle = process.runs.get(run_id)
    return handle.snapshot() if handle else None


def reconcile_stale_runs() -> list[Run]:
    """Mark the runs other processes left (their heartbeat stopped) as interrupted, and
    publish their run.done: see `store.interrupt_stale_runs`."""
    return store.interrupt_stale_runs(process.runs, publish_from_thread)


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

        One wake-up of the loop serves every run that became ready before it ran
        (each `call_soon_threadsafe` writes to the loop's self-pipe).
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
            if message["type"] == events.RUN_STOP and handle:
                handle.cancel.cancel()
            elif message["type"] == events.SNAPSHOT_REQUEST:
                live = handle.snapshot() if handle else None
                await layer.send(message["reply_to"], events.snapshot_reply(message["run"], live))

    def _keep(self) -> None:
        """The keeper thread: checkpoints and heartbeats for every run of this process,
        in one thread and one transaction per tick for all runs."""
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
            # On SQLite, while this process runs answers, the keeper keeps its connection
            # open, so that closing another thread's is never closing the last one (which
            # checkpoints the WAL into the database and deletes it). Otherwise it lets go
            # while asleep.
            if connection.vendor != "sqlite" or not self.runs:
                with contextlib.suppress(Exception):
                    connection.close()

    def checkpoint(self) -> None:
        """Store the status and text so far (with its seq) of every streaming run that moved,
        in one transaction (see `store.checkpoint`)."""
        handles = list(self.runs.items())
        states = [(run_id, state) for run_id, handle in handles if (state := handle.checkpoint_state())]
        if not states:
            return
        now = timezone.now()
        for _, state in states:
            state["heartbeat_at"] = now
        store.checkpoint(states)


process = Process()


# ---------------------------------------------------------------------------- publishing


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

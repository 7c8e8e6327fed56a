"""The conversation websocket: a snapshot of each run in progress, then live events.

Events carry `seq` per run; this consumer forwards them in order and drops
repeats, and the browser drops repeats again, so a reconnect loses and repeats
nothing. A gap means the channel layer dropped messages for a client too far
behind (its queue is bounded): the socket is closed with code 4008 and the
browser reconnects, getting a fresh snapshot. A delta of a run this socket was told
nothing of (it began before the socket joined the group, and had ended by the time the
socket listed the active runs) is preceded by a snapshot of the run's state; the
deltas queued after it then mostly drop as repeats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.http import Http404

from playground import access, relay
from playground.models import Conversation, Run
from playground.relay import events
from playground.signals import user_group

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_BAD_FRAME = 4400
CLOSE_ROLE_CHANGED = 4409
CLOSE_BEHIND = 4008
SNAPSHOT_TIMEOUT = 2.0


def may_watch(user_id: int, conversation_id: int) -> bool:
    """Whether the (active) user may read the conversation: access.conversation_for's rule."""
    user = get_user_model().objects.filter(id=user_id, is_active=True).first()
    if user is None:
        return False
    try:
        access.conversation_for(user, conversation_id, "conversation.read")
    except (Http404, access.Forbidden):
        return False
    return True


def find_run(run_id: int) -> Run | None:
    return Run.objects.select_related("user").filter(id=run_id).first()


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    # The policy action a connection takes (access.declare's contract, checked by
    # tests/test_permissions.py): `may_watch`.
    actions = {"CONNECT": "conversation.read"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # One message handled at a time, and the access recheck between them.
        self.dispatch_lock = asyncio.Lock()

    async def connect(self) -> None:
        user = self.scope.get("user")
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.group = await self.group_for(user, conversation_id)
        if self.group is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.conversation_id = conversation_id
        self.user_id = user.pk
        self.seqs: dict[int, int] = {}
        self.waiting: dict[int, list[dict]] = {}
        # Access taken away reaches this socket (playground.signals), and a timer checks too.
        self.user_group = user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        self.recheck = asyncio.ensure_future(self.recheck_every(settings.WS_RECHECK_SECONDS))
        # Join before reading state: every event after the snapshot then reaches us.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await relay.process.ensure_started()
        runs = await self.active_runs()
        await self.send_json(events.sync([run.id for run in runs]))
        for run in runs:
            await self.send_snapshot(run)
        await self.join_presence(user)

    async def dispatch(self, message: dict) -> None:
        # Channels' dispatch first runs aclose_old_connections() through the one shared
        # sync_to_async thread, for every message (DESIGN trap 1). This consumer reaches
        # the database only through database_sync_to_async, which closes connections
        # itself, so skip that hop: it was the largest cost per relayed event.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        async with self.dispatch_lock:
            await handler(message)

    async def send_json(self, content: dict, close: bool = False) -> None:
        """One websocket frame per event, handed straight to the server's send (channels
        passes it through three more coroutines to get there)."""
        await self.base_send({"type": "websocket.send", "text": json.dumps(content)})
        if close:
            await self.close(close)

    async def disconnect(self, code: int) -> None:
        if recheck := getattr(self, "recheck", None):
            recheck.cancel()
        await self.leave_presence()
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """The browser sends only `{"type": "ping"}`: anything else closes with 4400 and
        one warning line."""
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if not isinstance(content, dict) or content.get("type") != "ping":
            shown = (text_data if text_data is not None else repr(bytes_data))[:80]
            log.warning("websocket frame refused (closed with %s): %r", CLOSE_BAD_FRAME, shown)
            await self.close(code=CLOSE_BAD_FRAME)
            return
        await self.send_json({"type": "pong"})

    # -- access, checked again

    @database_sync_to_async
    def still_allowed(self) -> bool:
        return may_watch(self.user_id, self.conversation_id)

    async def check_access(self) -> bool:
        """Close with 4403 once the user may no longer see the conversation."""
        if await self.still_allowed():
            return True
        await self.close(code=CLOSE_FORBIDDEN)
        return False

    async def recheck_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            async with self.dispatch_lock:
                if not await self.check_access():
                    return

    async def access_changed(self, event: dict) -> None:
        """A membership of the user changed: 4403 without access, else 4409 when a role
        changed (the page reconnects, and says what the user may now do after a reload)."""
        if await self.check_access() and event.get("role") is not None:
            await self.close(code=CLOSE_ROLE_CHANGED)

    async def user_logged_out(self, event: dict) -> None:
        if event.get("session") in (None, self.scope.get("session") and self.scope["session"].session_key):
            await self.close(code=CLOSE_UNAUTHENTICATED)

    @database_sync_to_async
    def group_for(self, user, conversation_id: int) -> str | None:
        return events.group_of(conversation_id) if may_watch(user.pk, conversation_id) else None

    @database_sync_to_async
    def active_runs(self) -> list[Run]:
        relay.reconcile_stale_runs()
        runs = Run.objects.filter(conversation_id=self.conversation_id, status__in=Run.ACTIVE)
        return list(runs.select_related("user"))

    @database_sync_to_async
    def load_run(self, run_id: int) -> Run | None:
        return find_run(run_id)

    @database_sync_to_async
    def stored_run(self, run_id: int) -> dict | None:
        run = find_run(run_id)
        return run.to_dict() if run else None

    # -- snapshots

    async def send_snapshot(self, run: Run) -> None:
        state = run.to_dict()
        live = relay.local_snapshot(run.id)
        if live is not None:
            await self.forward_snapshot({**state, **live, "id": run.id})
            return
        if run.owner and run.is_active:
            # The run streams in another process: ask it, and hold its events meanwhile.
            self.waiting.setdefault(run.id, [])  # a catch-up holds the event that started it
            request = events.snapshot_request(run.id, self.channel_name)
            await self.channel_layer.send(run.owner, request)
            asyncio.get_running_loop().call_later(
                SNAPSHOT_TIMEOUT, lambda: asyncio.ensure_future(self.snapshot_timeout(run.id))
            )
            return
        await self.forward_snapshot(state)

    async def forward_snapshot(self, state: dict) -> None:
        run_id = state["id"]
        self.seqs[run_id] = state["seq"]
        await self.send_json(events.snapshot(state))
        for event in self.waiting.pop(run_id, []):
            await self.forward(event)

    async def run_snapshot(self, event: dict) -> None:
        """The owning process answered a snapshot request."""
        run_id = event["run"]
        if run_id not in self.waiting:
            return
        stored = await self.stored_run(run_id)
        if stored is None:
            self.waiting.pop(run_id)
            return
        live = event.get("snapshot")
        await self.forward_snapshot({**stored, **live, "id": run_id} if live else stored)

    async def catch_up(self, run_id: int, event: dict) -> None:
        """A delta of a run this socket was told nothing of (neither its start nor a
        snapshot): it began before the socket joined the group and was no longer active
        when the socket listed the active runs (it ended in between, its events still
        queued here). Send its state first, then what follows it, as for any snapshot."""
        self.waiting[run_id] = [event]
        run = await self.load_run(run_id)
        if run is None:  # not stored (deleted with its conversation): relay it as it comes
            self.waiting.pop(run_id)
            self.seqs[run_id] = event["seq"]
            await self.send_json(event)
            return
        await self.send_snapshot(run)

    async def snapshot_timeout(self, run_id: int) -> None:
        if run_id in self.waiting:
            stored = await self.stored_run(run_id)
            if stored is not None:
                await self.forward_snapshot(stored)

    # -- live events, named after their type

    async def run_started(self, event: dict) -> None:
        if not await self.check_access():
            return
        self.seqs.setdefault(event["run"]["id"], 0)
        await self.send_json(event)

    async def run_delta(self, event: dict) -> None:
        await self.forward(event)

    async def run_done(self, event: dict) -> None:
        await self.forward(event)

    async def conversation_changed(self, event: dict) -> None:
        await self.send_json(event)

    async def forward(self, event: dict) -> None:
        run_id = events.run_id_of(event)
        if run_id in self.waiting:
            self.waiting[run_id].append(event)
            return
        seq, last = event["seq"], self.seqs.get(run_id)
        if event["type"] == events.RUN_DONE:
            # The final state always wins, even numbered below what we relayed: a run
            # reconciled after its process died ends at its last checkpoint.
            self.seqs[run_id] = max(seq, last or 0)
            await self.send_json(event)
            return
        if last is not None and seq <= last:
            return
        if last is None and event["type"] == events.RUN_DELTA:
            await self.catch_up(run_id, event)
            return
        if event["type"] == events.RUN_DELTA and seq != (last or 0) + 1:
            # A gap: the layer dropped messages for us. Resync from a fresh snapshot.
            await self.close(code=CLOSE_BEHIND)
            return
        self.seqs[run_id] = seq
        await self.send_json(event)

    # -- presence: who else has the conversation open

    async def join_presence(self, user) -> None:
        """Announce this viewer to the conversation's group and ask the others to answer.
        Every viewer beats each PRESENCE_SECONDS; one silent for three beats (its process
        died) is dropped, so no ghost stays."""
        self.viewers: dict[str, tuple[int, str, float]] = {}
        self.shown_viewers: list[str] = []  # the page starts with nobody else: alone, nothing is sent
        self.me = (user.pk, user.get_username())
        await self.channel_layer.group_send(
            self.group, events.presence_here(self.channel_name, *self.me, reply=True)
        )
        self.presence_beat = asyncio.ensure_future(self.beat_presence(settings.PRESENCE_SECONDS))

    async def leave_presence(self) -> None:
        if beat := getattr(self, "presence_beat", None):
            beat.cancel()
            try:
                await self.channel_layer.group_send(self.group, events.presence_left(self.channel_name))
            except Exception as exc:  # the socket is going anyway; the others' expiry is the backstop
                log.warning("could not announce leaving conversation %s: %s", self.conversation_id, exc)

    async def beat_presence(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            beat = events.presence_here(self.channel_name, *self.me)
            await self.channel_layer.group_send(self.group, beat)
            async with self.dispatch_lock:
                await self.show_presence()

    async def presence_here(self, event: dict) -> None:
        self.viewers[event["channel"]] = (
            event["user"],
            event["name"],
            time.monotonic() + 3 * settings.PRESENCE_SECONDS,
        )
        if event.get("reply") and event["channel"] != self.channel_name:
            answer = events.presence_here(self.channel_name, *self.me)
            await self.channel_layer.send(event["channel"], answer)
        await self.show_presence()

    async def presence_left(self, event: dict) -> None:
        if self.viewers.pop(event["channel"], None) is not None:
            await self.show_presence()

    async def show_presence(self) -> None:
        """Send the browser the other users viewing, when that list changed."""
        now = time.monotonic()
        self.viewers = {c: v for c, v in self.viewers.items() if v[2] > now}
        names = sorted({name for user_id, name, _ in self.viewers.values() if user_id != self.me[0]})
        if names != self.shown_viewers:
            self.shown_viewers = names
            await self.send_json(events.presence(names))


def visible_running(user_id: int, workspace_id: int, manager: bool) -> list[int]:
    """The conversations of the workspace, visible to the user, with a run in progress."""
    found = Run.objects.filter(
        status__in=Run.ACTIVE, conversation__workspace_id=workspace_id, conversation__deleted_at__isnull=True
    )
    if not manager:
        found = found.filter(
            Q(conversation__visibility=Conversation.Visibility.SHARED) | Q(conversation__creator_id=user_id)
        )
    return sorted(set(found.values_list("conversation_id", flat=True)))


class WorkspaceConsumer(AsyncJsonWebsocketConsumer):
    """The workspace channel: `conversation.listed` events for the conversation list of an
    open page (playground.relay.events). A private conversation's events reach only those
    who may see it (its creator, owners and admins). Closes as ConversationConsumer does:
    4401 logged out, 4403 no access (also at once when the membership goes), 4409 when the
    role changed."""

    # The policy action a connection takes (checked by tests/test_permissions.py).
    actions = {"CONNECT": "workspace.read"}

    async def connect(self) -> None:
        user = self.scope.get("user")
        workspace_id = self.scope["url_route"]["kwargs"]["workspace_id"]
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id, self.workspace_id = user.pk, workspace_id
        self.role = await self.current_role()
        if self.role is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user_group = user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        self.group = events.workspace_group(workspace_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.recheck = asyncio.ensure_future(self.recheck_every(settings.WS_RECHECK_SECONDS))
        await self.send_json(events.workspace_sync(await self.running()))

    async def disconnect(self, code: int) -> None:
        if recheck := getattr(self, "recheck", None):
            recheck.cancel()
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """The browser sends only `{"type": "ping"}`: anything else closes with 4400."""
        if not isinstance(content, dict) or content.get("type") != "ping":
            await self.close(code=CLOSE_BAD_FRAME)
            return
        await self.send_json({"type": "pong"})

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        try:
            await super().receive(text_data, bytes_data, **kwargs)
        except ValueError:  # not JSON
            await self.close(code=CLOSE_BAD_FRAME)

    @database_sync_to_async
    def current_role(self) -> str | None:
        user = get_user_model().objects.filter(id=self.user_id, is_active=True).first()
        if user is None:
            return None
        try:
            return access.membership_for(user, self.workspace_id, self.actions["CONNECT"]).role
        except (Http404, access.Forbidden):
            return None

    @database_sync_to_async
    def running(self) -> list[int]:
        return visible_running(self.user_id, self.workspace_id, access.is_manager(self.role))

    async def check_access(self) -> bool:
        """Close with 4403 once the user is no longer a member; 4409 when the role changed."""
        role = await self.current_role()
        if role is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return False
        if role != self.role:
            await self.close(code=CLOSE_ROLE_CHANGED)
            return False
        return True

    async def recheck_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            if not await self.check_access():
                return

    async def access_changed(self, event: dict) -> None:
        await self.check_access()

    async def user_logged_out(self, event: dict) -> None:
        if event.get("session") in (None, self.scope.get("session") and self.scope["session"].session_key):
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def conversation_listed(self, event: dict) -> None:
        private = event["visibility"] == Conversation.Visibility.PRIVATE
        hidden = private and event["creator"] != self.user_id and not access.is_manager(self.role)
        # A conversation turned private still reaches everyone: their lists must drop it.
        if hidden and event["action"] != "visibility":
            return
        await self.send_json(event)

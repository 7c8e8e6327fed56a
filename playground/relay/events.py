"""The events of a conversation's stream: their type names and the one builder of each.

The relay publishes them to the conversation's group on the channel layer, the
consumer (playground.consumers) forwards them to browsers, and the tests read
them (tests/events.py). A type's dots become underscores in the name of the
consumer's handler (channels' rule): `run.delta` -> `run_delta`.

Browser-facing:
- `sync`: sent once on connect, the ids of the runs in progress.
- `snapshot`: one run's state (`Run.to_dict()`, with the live text so far and
  its `seq` when the run streams).
- `run.started`: a run was submitted: the run and the messages it added.
- `run.delta`: the text added since the previous delta, numbered `seq` (1, 2, …).
- `run.done`: the run's complete final state and its answer messages, numbered
  past the last delta; it always wins over what came before. The answer's text is in
  it once, in the run's `choices`: each message leaves out the fields its choice holds
  (ANSWER_FIELDS), and `done_messages` (static/js/lib/conversation-socket.js's
  `answerMessages` in the browser) puts them back.
- `conversation.changed`: the conversation was renamed or deleted.

Between processes (on the owning process's control channel):
- `run.stop`: stop the run.
- `run.snapshot_request` -> `run.snapshot`: the owner's live state of a run, sent
  to the asking consumer's channel.
"""

from __future__ import annotations

from typing import Any

SYNC = "sync"
SNAPSHOT = "snapshot"
RUN_STARTED = "run.started"
RUN_DELTA = "run.delta"
RUN_DONE = "run.done"
CONVERSATION_CHANGED = "conversation.changed"
RUN_STOP = "run.stop"
SNAPSHOT_REQUEST = "run.snapshot_request"
SNAPSHOT_REPLY = "run.snapshot"


def group_of(conversation_id: int | None) -> str:
    """The channel-layer group of a conversation's watchers."""
    return f"conversation-{conversation_id}"


def sync(active: list[int]) -> dict:
    return {"type": SYNC, "active": active}


def snapshot(state: dict) -> dict:
    """`state`: the run's `to_dict()`, overlaid with its live state when it streams."""
    return {"type": SNAPSHOT, "run": state}


def run_started(run: dict, messages: list[dict]) -> dict:
    return {"type": RUN_STARTED, "run": run, "messages": messages}


def run_delta(run_id: int, seq: int, choices: list[dict]) -> dict:
    """`choices`: per choice index, what it added (content, reasoning, tool_calls,
    logprobs, finish_reason)."""
    return {"type": RUN_DELTA, "run": run_id, "seq": seq, "choices": choices}


# What an answer message of run.done leaves out: its choice's (same `index` as the
# message's `choice_index`) in the run's `choices`, the message's content and reasoning
# as they were stored from it (playground.relay.store.save_answer).
ANSWER_FIELDS = ("content", "reasoning", "tool_calls")


def run_done(run: Any, messages: list[Any]) -> dict:
    """The last event of a run (`run` a Run, `messages` its answer's Messages): its
    complete state, so a client that missed deltas heals. Each message without
    ANSWER_FIELDS: the answer's text is carried once, in the run's choices."""
    return {
        "type": RUN_DONE,
        "run": run.to_dict(),
        "seq": run.last_seq,
        "messages": [_without_answer(m.to_dict()) for m in messages],
    }


def _without_answer(message: dict) -> dict:
    return {name: value for name, value in message.items() if name not in ANSWER_FIELDS}


def done_messages(event: dict) -> list[dict]:
    """A run.done's answer messages as `Message.to_dict()` gives them: each with its
    choice's content, reasoning and tool calls (the latter only when it has some)."""
    choices = {choice["index"]: choice for choice in event["run"]["choices"] or []}
    messages = []
    for message in event["messages"]:
        choice = choices.get(message["choice_index"], {})
        full = {**message, "content": choice.get("content") or "", "reasoning": choice.get("reasoning") or ""}
        if choice.get("tool_calls"):
            full["tool_calls"] = choice["tool_calls"]
        messages.append(full)
    return messages


def conversation_changed(conversation_id: int, **change: Any) -> dict:
    """`change`: `title=` the new title, or `deleted=True`."""
    return {"type": CONVERSATION_CHANGED, "conversation": conversation_id, **change}


def run_stop(run_id: int) -> dict:
    return {"type": RUN_STOP, "run": run_id}


def snapshot_request(run_id: int, reply_to: str) -> dict:
    return {"type": SNAPSHOT_REQUEST, "run": run_id, "reply_to": reply_to}


def snapshot_reply(run_id: int, live: dict | None) -> dict:
    """`live`: the owner's `RunHandle.snapshot()`, None when it no longer runs it."""
    return {"type": SNAPSHOT_REPLY, "run": run_id, "snapshot": live}


def run_id_of(event: dict) -> int:
    """The run an event is about (`run` is the run's dict in run.started and run.done)."""
    run = event["run"]
    return run["id"] if isinstance(run, dict) else run


# -- the workspace channel (playground.consumers.WorkspaceConsumer)
#
# - `workspace.sync`: sent once on connect, the ids of the conversations (that the user
#   may see) with a run in progress.
# - `conversation.listed`: something the conversation list shows changed: `action` is
#   "created", "renamed", "visibility", "changed", "deleted", "restored", "run.started"
#   or "run.done", `by` the username who did it (None when unknown). It carries no title:
#   the page reads the list again (GET /api/conversations/, which applies visibility).
#   `visibility` and `creator` (a user id) let the consumer hold back an event of a
#   private conversation from those who may not see it.
# - `presence` (on the conversation socket): `viewers`, the usernames of the others
#   who have the conversation open. Between consumers of a conversation's group,
#   `presence.here` (a viewer's heartbeat; `reply` asks the others to answer it on its
#   channel) and `presence.left`.

WORKSPACE_SYNC = "workspace.sync"
CONVERSATION_LISTED = "conversation.listed"
LISTED_ACTIONS = (
    "created",
    "renamed",
    "visibility",
    "changed",
    "deleted",
    "restored",
    "run.started",
    "run.done",
)
PRESENCE = "presence"
PRESENCE_HERE = "presence.here"
PRESENCE_LEFT = "presence.left"


def workspace_group(workspace_id: int) -> str:
    """The channel-layer group of a workspace's open pages."""
    return f"workspace-{workspace_id}"


def workspace_sync(running: list[int]) -> dict:
    return {"type": WORKSPACE_SYNC, "running": running}


def conversation_listed(conversation: Any, action: str, by: str | None) -> dict:
    """`conversation`: a Conversation (its id, visibility and creator are read)."""
    assert action in LISTED_ACTIONS, action
    return {
        "type": CONVERSATION_LISTED,
        "conversation": conversation.id,
        "action": action,
        "by": by,
        "visibility": conversation.visibility,
        "creator": conversation.creator_id,
    }


def presence(viewers: list[str]) -> dict:
    return {"type": PRESENCE, "viewers": viewers}


def presence_here(channel: str, user_id: int, username: str, reply: bool = False) -> dict:
    return {"type": PRESENCE_HERE, "channel": channel, "user": user_id, "name": username, "reply": reply}


def presence_left(channel: str) -> dict:
    return {"type": PRESENCE_LEFT, "channel": channel}

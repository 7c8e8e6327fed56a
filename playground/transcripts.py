"""A conversation's transcript: what the page reads, the change events its watchers get,
its system prompt, the title its first message gives it, and search over its text."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db.models import Q

from playground import relay
from playground.models import Conversation, Message, Workspace
from playground.relay import events
from playground.tokens import content_text


def announce(conversation_id: int, *, wait: bool = True, **change) -> None:
    """Tell everyone watching a conversation that its title or messages changed, or it is gone.

    `wait=False` hands the event to the server loop and returns at once, never raising
    (a submission whose run has started must not fail over it).
    """
    group, event = events.group_of(conversation_id), events.conversation_changed(conversation_id, **change)
    if wait:
        async_to_sync(get_channel_layer().group_send)(group, event)
    else:
        relay.publish_soon(group, event)


def transcript(conv: Conversation) -> dict:
    runs = conv.runs.filter(hidden=False).select_related("user")
    return {
        **conv.to_dict(),
        "messages": [m.to_dict() for m in conv.messages.all()],
        "runs": [r.to_dict() for r in runs],
    }


def sync_system_prompt(conv: Conversation, system: str, messages: list[Message]) -> list[Message]:
    """The System prompt box edits the conversation's leading system message.

    `messages` are the conversation's, in order; they are kept in step with the change.
    """
    current = next((m for m in messages if m.position == 0 and m.role == Message.Role.SYSTEM), None)
    if not system:
        if current:
            current.delete()
            messages.remove(current)
        return []
    if current and current.content == system:
        return []
    if current:
        current.content = system
        current.save(update_fields=["content"])
        return [current]
    current = Message.objects.create(conversation=conv, position=0, role=Message.Role.SYSTEM, content=system)
    messages.insert(0, current)
    return [current]


def title_from(content) -> str:
    text = " ".join(content_text(content).split())
    return (text[:60] + "…") if len(text) > 60 else (text or "New conversation")


def excerpt(text: str, query: str, width: int = 40) -> str:
    text = " ".join(text.split())
    at = text.lower().find(query.lower())
    if at < 0:
        return text[: 2 * width]
    start, end = max(0, at - width), at + len(query) + width
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def search_conversations(workspace: Workspace, query: str, limit: int = 100) -> list[dict]:
    """Conversations whose title or any message's text holds `query` (case-insensitive).

    Message content is JSON: the database sees a string as its JSON text, where quotes
    and newlines are escaped (and, in SQLite, non-ASCII characters too). Each spelling of
    the query is looked for, and each hit is confirmed on the decoded text.
    """
    # As typed; JSON-escaped with \uXXXX (SQLite's text); JSON-escaped keeping Unicode (jsonb's text).
    spellings = Q()
    for spelling in {query, json.dumps(query)[1:-1], json.dumps(query, ensure_ascii=False)[1:-1]}:
        spellings |= Q(content__icontains=spelling)
    hits: dict[int, str] = {}
    candidates = Message.objects.filter(spellings, conversation__workspace=workspace).order_by(
        "conversation_id", "position", "choice_index"
    )
    for conv_id, content in candidates.values_list("conversation_id", "content").iterator():
        text = content_text(content)
        if conv_id not in hits and query.lower() in text.lower():
            hits[conv_id] = excerpt(text, query)
    found = workspace.conversations.filter(Q(title__icontains=query) | Q(id__in=list(hits)))
    return [{**c.to_dict(), "match": hits.get(c.id, "")} for c in found.select_related("creator")[:limit]]

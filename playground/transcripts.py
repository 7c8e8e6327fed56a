"""A conversation's transcript: what the page reads, the change events its watchers get,
its system prompt, the title its first message gives it, and search over its text."""

from __future__ import annotations

import json
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from playground import relay
from playground.access import allows, is_manager
from playground.models import Conversation, Message, Run, Workspace
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


def recheck_watchers(conversation_id: int) -> None:
    """Tell every socket watching the conversation to check its access again (those who may
    no longer see it, as after it turns private, close with 4403)."""
    group = events.group_of(conversation_id)
    async_to_sync(get_channel_layer().group_send)(group, {"type": "access.changed", "role": None})


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


def search_conversations(conversations: QuerySet[Conversation], query: str, limit: int = 100) -> list[dict]:
    """Those of `conversations` (a workspace's, already narrowed to what the user may see,
    `visible_conversations`) whose title or any message's text holds `query`
    (case-insensitive).

    Message content is JSON: the database sees a string as its JSON text, where quotes
    and newlines are escaped (and, in SQLite, non-ASCII characters too). Each spelling of
    the query is looked for, and each hit is confirmed on the decoded text.
    """
    # As typed; JSON-escaped with \uXXXX (SQLite's text); JSON-escaped keeping Unicode (jsonb's text).
    spellings = Q()
    for spelling in {query, json.dumps(query)[1:-1], json.dumps(query, ensure_ascii=False)[1:-1]}:
        spellings |= Q(content__icontains=spelling)
    hits: dict[int, str] = {}
    candidates = Message.objects.filter(spellings, conversation__in=conversations.values("id")).order_by(
        "conversation_id", "position", "choice_index"
    )
    for conv_id, content in candidates.values_list("conversation_id", "content").iterator():
        text = content_text(content)
        if conv_id not in hits and query.lower() in text.lower():
            hits[conv_id] = excerpt(text, query)
    found = conversations.filter(Q(title__icontains=query) | Q(id__in=list(hits)))
    return [{**c.to_dict(), "match": hits.get(c.id, "")} for c in found.select_related("creator")[:limit]]


def visible_conversations(user, role: str | None, workspace: Workspace) -> QuerySet[Conversation]:
    """`access.can_see` as a query: the workspace's conversations out of the trash that a
    member with `role` sees (shared ones and their own; owners and admins, all)."""
    found = workspace.conversations.filter(deleted_at__isnull=True)
    if role is None:
        return found.none()
    if not is_manager(role):
        found = found.filter(Q(visibility=Conversation.Visibility.SHARED) | Q(creator=user))
    return found


def trash_for(user, role: str | None, workspace: Workspace) -> QuerySet[Conversation]:
    """The workspace's trashed conversations `user` may restore: owners and admins, all of
    them; members, their own; viewers, none (they may not change conversations)."""
    found = workspace.conversations.filter(deleted_at__isnull=False).select_related("creator")
    if is_manager(role):
        return found
    if allows(role, "conversation.write"):
        return found.filter(creator=user)
    return found.none()


def purge_trash(workspace: Workspace | None = None, now=None) -> int:
    """Delete the conversations in the trash for longer than PLAYGROUND_TRASH_DAYS (in
    `workspace`, or everywhere); their runs stay in the ledger, titled with the
    conversation's last title. Returns how many were purged."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.PLAYGROUND_TRASH_DAYS)
    expired = Conversation.objects.filter(deleted_at__lt=cutoff)
    if workspace is not None:
        expired = expired.filter(workspace=workspace)
    purged = 0
    for conv_id, title in expired.values_list("id", "title").iterator():
        with transaction.atomic():
            Run.objects.filter(conversation_id=conv_id).update(conversation_title=title)
            purged += (
                Conversation.objects.filter(id=conv_id, deleted_at__lt=cutoff)
                .delete()[1]
                .get(Conversation._meta.label, 0)
            )
    return purged


def list_entries(conversations, sort: str = "activity") -> list[dict]:
    """The list's entries: one per conversation, except that the columns of one Compare
    session (same `comparison` key) are one entry "Comparison: <title> (N columns)" with
    their ids and titles (in title order), placed where its most recent column would be."""
    entries: list[dict] = []
    groups: dict[str, dict] = {}
    for conv in conversations:
        if not conv.comparison:
            entries.append(conv.to_dict())
            continue
        group = groups.get(conv.comparison)
        if group is None:
            group = groups[conv.comparison] = {
                **conv.to_dict(),
                "kind": "comparison",
                "columns": [],
                "column_titles": [],
            }
            entries.append(group)
        group["columns"].append(conv.id)
        group["column_titles"].append(conv.title)
        if conv.visibility == Conversation.Visibility.PRIVATE:
            group["visibility"] = Conversation.Visibility.PRIVATE
    for group in groups.values():
        # Compare creates its columns at once: their titles ("… #1", "… #2") give the order.
        ordered = sorted(zip(group["column_titles"], group["columns"], strict=True))
        group["columns"] = [conv_id for _, conv_id in ordered]
        group["column_titles"] = [title for title, _ in ordered]
        first_title = group["column_titles"][0]
        n = len(group["columns"])
        group["title"] = f"Comparison: {first_title} ({n} column{'s' if n != 1 else ''})"
    return entries

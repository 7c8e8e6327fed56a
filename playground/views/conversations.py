"""Conversations: list, search and start them in a workspace; read, rename, share or keep
private, delete (to the trash) and restore one.

Who sees what (access.can_see): a shared conversation, every member; a private one, its
creator and the workspace's owners and admins. Teammates read and fork a shared
conversation; only its creator and owners/admins send in it, edit, rename, change its
visibility, delete or restore it. Deleting moves it to the trash for
PLAYGROUND_TRASH_DAYS days; then it is purged (its runs stay in the ledger).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.utils import timezone

from playground import audit
from playground.access import (
    POLICY,
    allows,
    can_see,
    conversation_for,
    current_workspace,
    may_write,
    membership_for,
    require,
)
from playground.api import api, json_error
from playground.models import Conversation
from playground.transcripts import (
    announce,
    list_entries,
    purge_trash,
    recheck_watchers,
    search_conversations,
    transcript,
    trash_for,
    visible_conversations,
)
from playground.validation import Invalid, clean_title

FILTERS = ("mine", "shared", "all", "trash")
SORTS = {"activity": "-updated_at", "created": "-created_at"}
COMPARISON_KEY = re.compile(r"[A-Za-z0-9-]{1,36}")
LIST_LIMIT = 500


def clean_visibility(value) -> str:
    if value not in Conversation.Visibility.values:
        raise Invalid({"visibility": "must be “private” or “shared”"})
    return value


def clean_comparison(value) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not COMPARISON_KEY.fullmatch(value):
        raise Invalid({"comparison": "must be up to 36 letters, digits or dashes"})
    return value


@api(methods={"GET": "workspace.read", "POST": "conversation.create"}, json=True)
def conversations(request: HttpRequest) -> JsonResponse:
    """GET: `filter` mine | shared | all (default) | trash, `sort` activity (default) |
    created, `q` a search. POST: `title`, optional `visibility` (default: the
    workspace's) and `comparison` (Compare's key for its columns)."""
    workspace = current_workspace(request)
    if request.method == "POST":
        membership_for(request.user, workspace.id, "conversation.create")
        data = request.json()
        title = clean_title(data.get("title")) or "New conversation"
        visibility = workspace.default_visibility
        if data.get("visibility") is not None:
            visibility = clean_visibility(data["visibility"])
        comparison = clean_comparison(data.get("comparison"))
        conversation = Conversation.objects.create(
            workspace=workspace,
            creator=request.user,
            title=title,
            visibility=visibility,
            comparison=comparison,
        )
        return JsonResponse(conversation.to_dict(), status=201)
    role = membership_for(request.user, workspace.id).role
    chosen = request.GET.get("filter") or "all"
    if chosen not in FILTERS:
        raise Invalid({"filter": "must be one of mine, shared, all, trash"})
    sort = request.GET.get("sort") or "activity"
    if sort not in SORTS:
        raise Invalid({"sort": "must be “activity” or “created”"})
    if chosen == "trash":
        purge_trash(workspace)
        found = trash_for(request.user, role, workspace).order_by("-deleted_at")[:LIST_LIMIT]
        items = [{**c.to_dict(), "deleted_at": c.deleted_at.isoformat()} for c in found]
        return JsonResponse(
            {"conversations": items, "trash_days": settings.PLAYGROUND_TRASH_DAYS, "filter": chosen}
        )
    found = visible_conversations(request.user, role, workspace)
    if chosen == "mine":
        found = found.filter(creator=request.user)
    elif chosen == "shared":
        found = found.filter(visibility=Conversation.Visibility.SHARED)
    query = request.GET.get("q", "").strip()
    if query:
        return JsonResponse({"conversations": search_conversations(found, query), "filter": chosen})
    found = found.select_related("creator").order_by(SORTS[sort], "-id")[:LIST_LIMIT]
    return JsonResponse({"conversations": list_entries(found, sort), "filter": chosen, "sort": sort})


@api(
    methods={"GET": "conversation.read", "PATCH": "conversation.write", "DELETE": "conversation.write"},
    json=True,
)
def conversation(request: HttpRequest, conversation_id: int) -> JsonResponse:
    action = "conversation.read" if request.method == "GET" else "conversation.write"
    conv = conversation_for(request.user, conversation_id, action)
    if request.method == "DELETE":
        conv.deleted_at, conv.deleted_by = timezone.now(), request.user
        conv.save(update_fields=["deleted_at", "deleted_by"])
        audit.record("conversation.deleted", request=request, workspace=conv.workspace, target=conv)
        announce(conversation_id, deleted=True)
        return JsonResponse({"deleted": conversation_id})
    if request.method == "PATCH":
        data = request.json()
        if "title" not in data and "visibility" not in data:
            raise Invalid({"title": "give a title or a visibility"})
        fields = []
        if "title" in data:
            title = clean_title(data.get("title"))
            if not title:
                return json_error(400, "title: cannot be empty", fields={"title": "cannot be empty"})
            conv.title = title
            fields.append("title")
        before = conv.visibility
        if "visibility" in data:
            conv.visibility = clean_visibility(data["visibility"])
            fields.append("visibility")
        conv.save(update_fields=fields)
        if conv.visibility != before:
            audit.record(
                "conversation.visibility_changed",
                request=request,
                workspace=conv.workspace,
                target=conv,
                before=before,
                after=conv.visibility,
            )
            if conv.visibility == Conversation.Visibility.PRIVATE:
                recheck_watchers(conv.id)
        announce(conv.id, title=conv.title)
        return JsonResponse(conv.to_dict())
    writable = may_write(request.user, conv)
    refusal = ""
    if not writable:
        refusal = (
            POLICY["conversation.write"].refusal
            if not allows(conv.member_role, "conversation.write")
            else POLICY["conversation.write_any"].refusal
        )
    return JsonResponse({**transcript(conv), "may_write": writable, "refusal": refusal})


@api(methods={"POST": "conversation.write"})
def restore_conversation(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """Take a conversation out of the trash: its creator, or an owner/admin (404 when it
    is not in the trash or the user may not see it)."""
    conv = Conversation.objects.for_member(request.user.id, conversation_id)
    if conv is None or conv.member_role is None or conv.deleted_at is None or not can_see(request.user, conv):
        raise Http404
    require(conv.member_role, "conversation.write")
    if conv.creator_id != request.user.id:
        require(conv.member_role, "conversation.write_any")
    conv.deleted_at, conv.deleted_by = None, None
    conv.save(update_fields=["deleted_at", "deleted_by"])
    audit.record("conversation.restored", request=request, workspace=conv.workspace, target=conv)
    announce(conv.id, title=conv.title)
    return JsonResponse(conv.to_dict())

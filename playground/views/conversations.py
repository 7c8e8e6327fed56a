"""Conversations: list, search and start them in a workspace; read, rename, delete one."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from playground.access import conversation_for, current_workspace, membership_for
from playground.api import api, json_error
from playground.models import Conversation
from playground.transcripts import announce, search_conversations, transcript
from playground.validation import clean_title


@api(methods={"GET": "workspace.read", "POST": "conversation.create"}, json=True)
def conversations(request: HttpRequest) -> JsonResponse:
    workspace = current_workspace(request)
    if request.method == "POST":
        membership_for(request.user, workspace.id, "conversation.create")
        title = clean_title(request.json().get("title")) or "New conversation"
        conversation = Conversation.objects.create(workspace=workspace, creator=request.user, title=title)
        return JsonResponse(conversation.to_dict(), status=201)
    query = request.GET.get("q", "").strip()
    if query:
        return JsonResponse({"conversations": search_conversations(workspace, query)})
    items = workspace.conversations.select_related("creator")[:500]
    return JsonResponse({"conversations": [c.to_dict() for c in items]})


@api(
    methods={"GET": "conversation.read", "PATCH": "conversation.write", "DELETE": "conversation.write"},
    json=True,
)
def conversation(request: HttpRequest, conversation_id: int) -> JsonResponse:
    action = "conversation.read" if request.method == "GET" else "conversation.write"
    conv = conversation_for(request.user, conversation_id, action)
    if request.method == "DELETE":
        conv.delete()
        announce(conversation_id, deleted=True)
        return JsonResponse({"deleted": conversation_id})
    if request.method == "PATCH":
        title = clean_title(request.json().get("title"))
        if not title:
            return json_error(400, "title: cannot be empty", fields={"title": "cannot be empty"})
        conv.title = title
        conv.save(update_fields=["title"])
        announce(conv.id, title=conv.title)
        return JsonResponse(conv.to_dict())
    return JsonResponse(transcript(conv))

"""Conversations: list, search and start them in a workspace; read, rename, delete one."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from playground.access import Forbidden, conversation_for, current_workspace, may_manage, runner_of
from playground.api import api, json_error
from playground.models import Conversation
from playground.transcripts import announce, search_conversations, transcript
from playground.validation import clean_title


@api(methods=["GET", "POST"], json=True)
def conversations(request: HttpRequest) -> JsonResponse:
    workspace = current_workspace(request)
    if request.method == "POST":
        runner_of(request.user, workspace.id, "Viewers cannot start conversations.")
        title = clean_title(request.json().get("title")) or "New conversation"
        conversation = Conversation.objects.create(workspace=workspace, creator=request.user, title=title)
        return JsonResponse(conversation.to_dict(), status=201)
    query = request.GET.get("q", "").strip()
    if query:
        return JsonResponse({"conversations": search_conversations(workspace, query)})
    items = workspace.conversations.select_related("creator")[:500]
    return JsonResponse({"conversations": [c.to_dict() for c in items]})


@api(methods=["GET", "PATCH", "DELETE"], json=True)
def conversation(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conv = conversation_for(request.user, conversation_id, write=request.method != "GET")
    if request.method != "GET" and not may_manage(request.user, conv):
        raise Forbidden("Only the conversation's creator, or an owner or admin of its workspace, may.")
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

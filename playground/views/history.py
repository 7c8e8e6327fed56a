"""Export a conversation (JSON or Markdown) and import one back; import a pasted request
(a JSON body or a curl command) as a new conversation. The format: playground.exports."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header

from playground.access import conversation_for, current_workspace, membership_for
from playground.api import api, read_json
from playground.exports import (
    EXPORT_KEY,
    clean_document,
    export_document,
    file_stem,
    imported_title,
    to_markdown,
)
from playground.models import Conversation, Message
from playground.snippets import UnreadableRequest, parse_request
from playground.transcripts import sync_system_prompt, title_from
from playground.validation import Invalid, split_body


def download(content: str, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@api(methods={"GET": "conversation.read"})
def export_json(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conv = conversation_for(request.user, conversation_id)
    text = json.dumps(export_document(conv), ensure_ascii=False, indent=2) + "\n"
    return download(text, f"{file_stem(conv)}.json", "application/json; charset=utf-8")


@api(methods={"GET": "conversation.read"})
def export_markdown(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conv = conversation_for(request.user, conversation_id)
    return download(to_markdown(conv), f"{file_stem(conv)}.md", "text/markdown; charset=utf-8")


def read_document(request: HttpRequest) -> dict:
    """The posted export: the JSON document itself, or {"text": the file's text}."""
    # Exports of conversations with uploaded images outgrow the API's usual limit.
    data = read_json(request, limit=settings.PLAYGROUND_IMPORT_MAX_BYTES)
    if "messages" not in data and "text" in data:
        if not isinstance(data["text"], str):
            raise Invalid({"text": "must be the file's text"})
        try:
            return parse_request(data["text"])["body"]
        except UnreadableRequest as exc:
            raise Invalid({"text": f"This is not a conversation export. {exc}"}) from None
    return data


@api(methods={"POST": "conversation.create"})
def import_conversation(request: HttpRequest) -> JsonResponse:
    """An exported conversation (or any chat-completions body) becomes a new conversation."""
    workspace = current_workspace(request)
    membership_for(request.user, workspace.id, "conversation.create")
    document = read_document(request)
    messages, meta = clean_document(document)
    wire = {k: v for k, v in document.items() if k not in ("messages", EXPORT_KEY)}
    fields = split_body(wire)
    # A leading system message is the System prompt box's, which lives at position 0.
    first = 0 if messages[0]["role"] == Message.Role.SYSTEM else 1
    with transaction.atomic():
        conv = Conversation.objects.create(
            workspace=workspace,
            creator=request.user,
            title=imported_title(meta, messages),
            visibility=workspace.default_visibility,
        )
        Message.objects.bulk_create(
            Message(conversation=conv, position=position, **message)
            for position, message in enumerate(messages, start=first)
        )
    system = messages[0]["content"] if first == 0 and isinstance(messages[0]["content"], str) else ""
    return JsonResponse(
        {
            "conversation": conv.to_dict(),
            "messages": len(messages),
            "model": fields["model"],
            "system": system,
            "params": fields["params"],
            "extra_body": fields["extra_body"],
            "skipped": fields["skipped"],
        },
        status=201,
    )


@api(methods={"POST": "conversation.create"}, json=True)
def import_request(request: HttpRequest) -> JsonResponse:
    """A pasted JSON body or curl command becomes a new conversation plus the page's fields."""
    workspace = current_workspace(request)
    membership_for(request.user, workspace.id, "conversation.create")
    text = str(request.json().get("text", ""))
    try:
        parsed = parse_request(text)
        fields = split_body(parsed["body"])
    except UnreadableRequest as exc:
        raise Invalid({"text": str(exc)}, message=str(exc)) from None
    except Invalid as exc:  # a message the rules refuse: the pasted text is what to fix
        raise Invalid({"text": str(exc)}, message=str(exc)) from None
    with transaction.atomic():
        conv = Conversation.objects.create(
            workspace=workspace,
            creator=request.user,
            title=title_from(fields["message"] or "Imported request"),
            visibility=workspace.default_visibility,
        )
        sync_system_prompt(conv, fields["system"], [])
        for position, message in enumerate(fields.pop("history"), start=1):
            Message.objects.create(conversation=conv, position=position, **message)
    return JsonResponse({"conversation": conv.to_dict(), **fields, "url": parsed["url"]}, status=201)

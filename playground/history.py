"""Export a conversation as JSON (its exact wire message list) or Markdown, and import it back.

The JSON export is a chat-completions body: `model`, `messages` (exactly
`Conversation.history()`) and the parameters of the latest visible run, so it can
be sent as it is or pasted into "Import request". What is not part of the wire
(format marker, title, export time, stored reasoning) sits under one key,
`playground_export`, which the importers here skip.

Importing creates a new conversation holding every message as a turn; each
message is checked, and a refusal names the field (`messages[3].tool_call_id`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from playground.forms import EXPORT_META_KEY, RESERVED, ROLES, Invalid, part_problem, split_body
from playground.models import Conversation, Message, Run
from playground.snippets import ImportError_, parse_request
from playground.tokens import content_text
from playground.views import (
    Forbidden,
    api,
    conversation_for,
    current_workspace,
    json_error,
    membership_for,
    read_json,
    title_from,
)

EXPORT_KEY = EXPORT_META_KEY
FORMAT = "relay-playground.conversation"
VERSION = 1
NAME_MAX = 100  # Message.name and Message.tool_call_id
SHOWN_ERRORS = 5


# ---------------------------------------------------------------------------- what is exported


def latest_visible_run(conv: Conversation) -> Run | None:
    return conv.runs.filter(hidden=False).order_by("-submitted_at", "-id").first()


def shown_messages(conv: Conversation) -> list[Message]:
    """The turns that continue the conversation: chosen choices of runs still shown."""
    messages = conv.messages.select_related("run")
    return [m for m in messages if m.in_history and not (m.run and m.run.hidden)]


def stored_reasoning(conv: Conversation, wire: list[dict]) -> dict[str, str]:
    """Reasoning kept with the answers, keyed by their index in `wire` (the history)."""
    reasoning, at = {}, 0
    for message in conv.messages.all():
        if at < len(wire) and message.in_history and message.to_wire() == wire[at]:
            if message.reasoning and message.role == Message.Role.ASSISTANT:
                reasoning[str(at)] = message.reasoning
            at += 1
    return reasoning


def export_document(conv: Conversation) -> dict:
    run = latest_visible_run(conv)
    body = run.sent_body() if run else {}
    body = body if isinstance(body, dict) else {}
    document: dict[str, Any] = {}
    model = body.get("model") or (run.model if run else "")
    if model:
        document["model"] = model
    document["messages"] = conv.history()
    document.update((k, v) for k, v in body.items() if k not in RESERVED and k != EXPORT_KEY)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "title": conv.title,
        "exported_at": timezone.now().isoformat(),
    }
    if run:
        meta["provider"] = run.provider_name
    if reasoning := stored_reasoning(conv, document["messages"]):
        meta["reasoning"] = reasoning
    document[EXPORT_KEY] = meta
    return document


def download(content: str, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def file_stem(conv: Conversation) -> str:
    return slugify(conv.title, allow_unicode=True)[:80].strip("-_") or f"conversation-{conv.id}"


@require_GET
@api
def export_json(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conv = conversation_for(request.user, conversation_id)
    text = json.dumps(export_document(conv), ensure_ascii=False, indent=2) + "\n"
    return download(text, f"{file_stem(conv)}.json", "application/json; charset=utf-8")


@require_GET
@api
def export_markdown(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conv = conversation_for(request.user, conversation_id)
    return download(to_markdown(conv), f"{file_stem(conv)}.md", "text/markdown; charset=utf-8")


# ---------------------------------------------------------------------------- Markdown


ROLE_HEADINGS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool result"}


def to_markdown(conv: Conversation) -> str:
    blocks = [f"# {one_line(conv.title) or 'Conversation'}"]
    for message in shown_messages(conv):
        blocks.append(heading(message))
        if message.reasoning and message.role == Message.Role.ASSISTANT:
            blocks.append(quote(f"**Reasoning**\n\n{message.reasoning}"))
        blocks.extend(content_blocks(message.content))
        for call in message.tool_calls or []:
            blocks.extend(tool_call_blocks(call))
        if message.role == Message.Role.ASSISTANT and message.run and not message.run.hidden:
            blocks.append(f"*{run_footer(message.run, message.choice_index)}*")
    return "\n\n".join(b for b in blocks if b) + "\n"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def heading(message: Message) -> str:
    text = ROLE_HEADINGS.get(message.role, message.role.capitalize())
    details = []
    if message.name:
        details.append(f"name `{message.name}`")
    if message.tool_call_id:
        details.append(f"for call `{message.tool_call_id}`")
    return f"## {text}" + (f" ({', '.join(details)})" if details else "")


def quote(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.strip("\n").splitlines())


def fence(text: str, language: str = "") -> str:
    """A code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marks = "`" * max(3, longest + 1)
    return f"{marks}{language}\n{text.rstrip(chr(10))}\n{marks}"


def content_blocks(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content] if content.strip() else []
    if not isinstance(content, list):
        return [fence(json.dumps(content, ensure_ascii=False, indent=2), "json")]
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append(str(part.get("text", "")))
        elif kind in ("image_url", "video_url"):
            blocks.append(media_line(kind, part.get(kind)))
        else:
            blocks.append(fence(json.dumps(part, ensure_ascii=False, indent=2), "json"))
    return [b for b in blocks if b.strip()]


def media_line(kind: str, value: Any) -> str:
    noun = "image" if kind == "image_url" else "video"
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        return f"[{noun} without a URL]"
    if url.startswith("data:"):
        return f"[uploaded {noun}, {data_url_size(url)}]"
    target = url.replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")
    return f"![{noun}](<{target}>)" if noun == "image" else f"[{noun}](<{target}>)"


def data_url_size(url: str) -> str:
    header, _, data = url.partition(",")
    if header.endswith(";base64"):
        data = re.sub(r"\s", "", data)
        try:
            size = len(base64.b64decode(data + "=" * (-len(data) % 4)))
        except (binascii.Error, ValueError):
            size = len(data) * 3 // 4
    else:
        size = len(data)
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def tool_call_blocks(call: Any) -> list[str]:
    if not isinstance(call, dict):
        return [fence(json.dumps(call, ensure_ascii=False, indent=2), "json")]
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    title = f"**Tool call** `{function.get('name') or '?'}`"
    if call.get("id"):
        title += f" (id `{call['id']}`)"
    arguments = function.get("arguments", "")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        shown = json.dumps(parsed, ensure_ascii=False, indent=2)
    except ValueError:  # arguments that are not JSON (a cut-off stream): shown as they came
        return [title, fence(str(arguments))]
    return [title, fence(shown, "json")]


def format_ms(ms: int | None) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def run_footer(run: Run, choice_index: int) -> str:
    parts = [f"{run.model} via {run.provider_name}" if run.provider_name else run.model]
    if run.status != Run.Status.COMPLETED:
        parts.append(run.status)
    choice = next((c for c in run.output or [] if c.get("index") == choice_index), None)
    reason = (choice or {}).get("finish_reason")
    if not reason and len(run.finish_reasons or []) > choice_index:
        reason = run.finish_reasons[choice_index]
    if reason:
        parts.append(f"finish_reason: {reason}")
    if run.total_tokens is not None:
        usage = f"{run.prompt_tokens} prompt + {run.completion_tokens} completion = {run.total_tokens} tokens"
        parts.append(f"{usage} (estimated)" if run.usage_estimated else usage)
    ttft = run.timing()["ttft_ms"]
    if ttft is not None:
        parts.append(f"first token {format_ms(ttft)}")
    return " · ".join(parts)


# ---------------------------------------------------------------------------- import


def read_document(request: HttpRequest) -> dict:
    """The posted export: the JSON document itself, or {"text": the file's text}."""
    # Exports of conversations with uploaded images outgrow the API's usual limit.
    data = read_json(request, limit=settings.PLAYGROUND_IMPORT_MAX_BYTES)
    if "messages" not in data and "text" in data:
        if not isinstance(data["text"], str):
            raise Invalid({"text": "must be the file's text"})
        try:
            return parse_request(data["text"])["body"]
        except ImportError_ as exc:
            raise Invalid({"text": f"This is not a conversation export. {exc}"}) from None
    return data


def clean_document(document: dict) -> tuple[list[dict], dict]:
    """Every message as a Message's fields, and the export's metadata; Invalid naming each bad field."""
    errors: dict[str, str] = {}
    meta = clean_meta(document.get(EXPORT_KEY), errors)
    raw = document.get("messages")
    if not isinstance(raw, list):
        errors["messages"] = "must be a list of messages"
        raw = []
    elif not raw:
        errors["messages"] = "is empty: there is nothing to import"
    messages = [clean_message(message, f"messages[{i}]", errors) for i, message in enumerate(raw)]
    for key, text in meta.get("reasoning", {}).items():
        index = int(key)
        if index >= len(messages) or messages[index].get("role") != Message.Role.ASSISTANT:
            errors[f"{EXPORT_KEY}.reasoning.{key}"] = "does not belong to an assistant message"
        else:
            messages[index]["reasoning"] = text
    if errors:
        raise Invalid(errors)
    return messages, meta


def clean_meta(meta: Any, errors: dict) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        errors[EXPORT_KEY] = "must be an object"
        return {}
    if "format" in meta and meta["format"] != FORMAT:
        errors[f"{EXPORT_KEY}.format"] = f"is not {FORMAT}"
    version = meta.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        errors[f"{EXPORT_KEY}.version"] = "must be a whole number"
    elif version > VERSION:
        errors[f"{EXPORT_KEY}.version"] = (
            f"is {version}: the file comes from a newer playground (this one reads version {VERSION})"
        )
    cleaned: dict[str, Any] = {}
    title = meta.get("title")
    if title is not None and not isinstance(title, str):
        errors[f"{EXPORT_KEY}.title"] = "must be text"
    elif title and title.strip():
        cleaned["title"] = title.strip()[:200]
    reasoning = meta.get("reasoning", {})
    if not isinstance(reasoning, dict):
        errors[f"{EXPORT_KEY}.reasoning"] = "must map message indexes to text"
        reasoning = {}
    cleaned["reasoning"] = {}
    for key, text in reasoning.items():
        if not str(key).isdigit() or not isinstance(text, str):
            errors[f"{EXPORT_KEY}.reasoning.{key}"] = "must map a message index to text"
        elif text:
            cleaned["reasoning"][str(int(key))] = text
    return cleaned


MESSAGE_FIELDS = {"role", "content", "name", "tool_calls", "tool_call_id"}
# How relays spell an answer's reasoning on the wire; stored as the message's reasoning.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def clean_message(message: Any, at: str, errors: dict) -> dict:
    if not isinstance(message, dict):
        errors[at] = "must be an object with a role and content"
        return {}
    out: dict[str, Any] = {}
    role = message.get("role")
    if role not in ROLES:
        errors[f"{at}.role"] = f"must be one of {', '.join(ROLES)}"
    out["role"] = role
    out["content"] = clean_content(message, role, at, errors)
    for field in ("name", "tool_call_id"):
        value = message.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > NAME_MAX:
            errors[f"{at}.{field}"] = f"must be text of at most {NAME_MAX} characters"
        elif value:
            out[field] = value
    missing_id = not out.get("tool_call_id", "").strip() and f"{at}.tool_call_id" not in errors
    if role == Message.Role.TOOL and missing_id:
        errors[f"{at}.tool_call_id"] = "a tool result needs the id of the tool call it answers"
    calls = message.get("tool_calls")
    if calls:
        if role != Message.Role.ASSISTANT:
            errors[f"{at}.tool_calls"] = "only assistant messages carry tool calls"
        elif problem := tool_calls_problem(calls, f"{at}.tool_calls"):
            errors.update(problem)
        else:
            out["tool_calls"] = calls
    for field in REASONING_FIELDS:
        value = message.get(field)
        if value is None:
            continue
        if role != Message.Role.ASSISTANT or not isinstance(value, str):
            errors[f"{at}.{field}"] = "only an assistant message carries reasoning, as text"
        elif value:
            out["reasoning"] = value
    for field, value in message.items():
        if field not in MESSAGE_FIELDS and field not in REASONING_FIELDS and value is not None:
            errors[f"{at}.{field}"] = "is not a message field the playground keeps; remove it"
    return out


def clean_content(message: dict, role: Any, at: str, errors: dict) -> str | list:
    if "content" not in message or message["content"] is None:
        # The wire allows an answer that only calls tools to leave content out (or null).
        if role != Message.Role.ASSISTANT:
            errors[f"{at}.content"] = "is missing"
        return ""
    content = message["content"]
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        errors[f"{at}.content"] = "must be text or a non-empty list of content parts"
        return ""
    for j, part in enumerate(content):
        if problem := part_problem(part):
            sub, why = problem
            errors[f"{at}.content[{j}]" + (f".{sub}" if sub else "")] = why
    return content


def tool_calls_problem(calls: Any, at: str) -> dict[str, str]:
    if not isinstance(calls, list):
        return {at: "must be a list of tool calls"}
    for k, call in enumerate(calls):
        where = f"{at}[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return {f"{where}.function": 'needs {"name": …, "arguments": "…"}'}
        if not isinstance(function.get("arguments", ""), str):
            return {f"{where}.function.arguments": "must be a string of JSON, as on the wire"}
        if not isinstance(call.get("id", ""), str):
            return {f"{where}.id": "must be text"}
    return {}


def error_response(exc: Invalid) -> JsonResponse:
    items = list(exc.errors.items())
    text = "; ".join(f"{k}: {v}" for k, v in items[:SHOWN_ERRORS])
    if len(items) > SHOWN_ERRORS:
        text += f"; and {len(items) - SHOWN_ERRORS} more"
    return json_error(exc.status, text, fields=exc.errors)


def imported_title(meta: dict, messages: list[dict]) -> str:
    if meta.get("title"):
        return meta["title"]
    for role in (Message.Role.USER, None):
        for message in messages:
            if (role is None or message["role"] == role) and content_text(message["content"]).strip():
                return title_from(message["content"])
    return "Imported conversation"


@require_POST
@api
def import_conversation(request: HttpRequest) -> JsonResponse:
    """An exported conversation (or any chat-completions body) becomes a new conversation."""
    workspace = current_workspace(request)
    if not membership_for(request.user, workspace.id).can_run:
        raise Forbidden("Viewers cannot import conversations.")
    try:
        document = read_document(request)
        messages, meta = clean_document(document)
    except Invalid as exc:
        return error_response(exc)
    wire = {k: v for k, v in document.items() if k not in ("messages", EXPORT_KEY)}
    fields = split_body(wire)
    # A leading system message is the System prompt box's, which lives at position 0.
    first = 0 if messages[0]["role"] == Message.Role.SYSTEM else 1
    with transaction.atomic():
        conv = Conversation.objects.create(
            workspace=workspace, creator=request.user, title=imported_title(meta, messages)
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


urlpatterns = [
    path("api/conversations/import/", import_conversation, name="api-import-conversation"),
    path("api/conversations/<id:conversation_id>/export.json", export_json, name="api-export-json"),
    path("api/conversations/<id:conversation_id>/export.md", export_markdown, name="api-export-md"),
]

"""The conversation export format, both ways: a conversation as JSON (its exact wire
message list) or Markdown, and an export read back as the fields of new messages.

The JSON export is a chat-completions body: `model`, `messages` (exactly
`Conversation.history()`) and the parameters of the latest visible run, so it can
be sent as it is or pasted into "Import request". What is not part of the wire
(format marker, title, export time, stored reasoning) sits under one key,
`playground_export` (EXPORT_KEY), which the importers skip.

Reading one back checks every message by the message rules
(playground.validation.messages); a refusal names the field (`messages[3].tool_call_id`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from django.utils import timezone
from django.utils.text import slugify

from playground.models import Conversation, Message, Run
from playground.tokens import content_text
from playground.transcripts import title_from
from playground.validation import EXPORT_META_KEY, RESERVED, Invalid, message_problems

EXPORT_KEY = EXPORT_META_KEY
FORMAT = "relay-playground.conversation"
VERSION = 1
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


def file_stem(conv: Conversation) -> str:
    return slugify(conv.title, allow_unicode=True)[:80].strip("-_") or f"conversation-{conv.id}"


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
    messages = []
    for i, message in enumerate(raw):
        cleaned, problems = message_problems(message, f"messages[{i}]")
        messages.append(cleaned)
        errors.update(problems)
    for key, text in meta.get("reasoning", {}).items():
        index = int(key)
        if index >= len(messages) or messages[index].get("role") != Message.Role.ASSISTANT:
            errors[f"{EXPORT_KEY}.reasoning.{key}"] = "does not belong to an assistant message"
        else:
            messages[index]["reasoning"] = text
    if errors:
        raise Invalid(errors, message=summary(errors))
    return messages, meta


def summary(errors: dict[str, str]) -> str:
    """The first SHOWN_ERRORS fields and why, and how many more."""
    items = list(errors.items())
    text = "; ".join(f"{k}: {v}" for k, v in items[:SHOWN_ERRORS])
    if len(items) > SHOWN_ERRORS:
        text += f"; and {len(items) - SHOWN_ERRORS} more"
    return text


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


def imported_title(meta: dict, messages: list[dict]) -> str:
    if meta.get("title"):
        return meta["title"]
    for role in (Message.Role.USER, None):
        for message in messages:
            if (role is None or message["role"] == role) and content_text(message["content"]).strip():
                return title_from(message["content"])
    return "Imported conversation"

"""The rules for one chat message, as the chat-completions wire carries it and a
Message row stores it: the one validator of every way a message comes in.

- a run's new user message (submit): its content only (`clean_content`);
- a turn added or edited by hand, an imported export, a pasted request (import
  request): the whole message (`message_problems`, `clean_message`).

A message is an object with a `role` (ROLES); `content`, text or a non-empty list of
parts (text, image_url, video_url), which only an assistant answer may leave out; a
`name` and, for a tool result (where it is required), the `tool_call_id` it answers,
each text of at most NAME_MAX characters; `tool_calls`, on assistant answers only,
each `{"id": …, "function": {"name": …, "arguments": "<JSON text>"}}`; reasoning
(REASONING_FIELDS, as relays spell it), on assistant answers only, as text. Nothing
else. Each refusal names its field below the message's own path (`messages[3].content[0].image_url`).
"""

from __future__ import annotations

from typing import Any

from playground.upstream import REASONING_FIELDS
from playground.validation.base import Invalid

ROLES = ("system", "user", "assistant", "tool")
NAME_MAX = 100  # Message.name and Message.tool_call_id
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")
CONTENT_SHAPE = "must be text or a non-empty list of content parts"
NEEDS_CALL_ID = "a tool result needs the id of the tool call it answers"


def field_at(at: str, field: str) -> str:
    """`field` below the path `at` ("" is the top: the field itself)."""
    return f"{at}.{field}" if at else field


def part_problem(part: Any) -> tuple[str, str] | None:
    """What is wrong with one content part, as (its subfield or "", why), or None."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return None if isinstance(part.get("text"), str) else ("text", "must be text")
    if kind in ("image_url", "video_url"):
        value = part.get(kind)
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url.strip():
            return kind, 'needs a URL: {"url": "https://…" or "data:…"}'
        return None
    return "", "each content part needs a type of text, image_url or video_url"


def content_problems(content: Any, at: str) -> dict[str, str]:
    """Why `content` (found at the path `at`) is refused, by field: every bad part named."""
    if isinstance(content, str):
        return {}
    if not isinstance(content, list) or not content:
        return {at: CONTENT_SHAPE}
    errors = {}
    for i, part in enumerate(content):
        if problem := part_problem(part):
            sub, why = problem
            errors[f"{at}[{i}]" + (f".{sub}" if sub else "")] = why
    return errors


def clean_content(content: Any, field: str) -> str | list:
    """`content` as given, or Invalid naming each bad part below `field`."""
    if errors := content_problems(content, field):
        raise Invalid(errors)
    return content


def tool_calls_problem(calls: Any, at: str) -> dict[str, str]:
    """The first problem of an answer's tool calls (found at `at`), by field, or {}."""
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


def message_problems(message: Any, at: str = "", *, partial: bool = False) -> tuple[dict, dict[str, str]]:
    """A message's fields as a Message stores them, and why each bad field is refused
    (named below the path `at`). `partial`: a change to a stored message, where only the
    fields given are checked and returned (`role` and `tool_call_id` given as stored)."""
    errors: dict[str, str] = {}
    if not isinstance(message, dict):
        return {}, {at or "body": "must be an object with a role and content"}
    out: dict[str, Any] = {}
    role = message.get("role")
    if role not in ROLES:
        errors[field_at(at, "role")] = f"must be one of {', '.join(ROLES)}"
    out["role"] = role
    if message.get("content") is not None:
        out["content"] = message["content"]
        errors.update(content_problems(message["content"], field_at(at, "content")))
    elif not partial or "content" in message:
        # The wire allows an answer that only calls tools to leave content out (or null).
        if role != "assistant":
            errors[field_at(at, "content")] = "is missing"
        out["content"] = ""
    for field in ("name", "tool_call_id"):
        value = message.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > NAME_MAX:
            errors[field_at(at, field)] = f"must be text of at most {NAME_MAX} characters"
        else:
            out[field] = value
    call_id = field_at(at, "tool_call_id")
    if role == "tool" and not out.get("tool_call_id", "").strip() and call_id not in errors:
        errors[call_id] = NEEDS_CALL_ID
    calls = message.get("tool_calls")
    if calls:
        if role != "assistant":
            errors[field_at(at, "tool_calls")] = "only assistant messages carry tool calls"
        elif problem := tool_calls_problem(calls, field_at(at, "tool_calls")):
            errors.update(problem)
        else:
            out["tool_calls"] = calls
    elif "tool_calls" in message:
        out["tool_calls"] = None
    for field in REASONING_FIELDS:
        value = message.get(field)
        if value is None:
            continue
        if role != "assistant" or not isinstance(value, str):
            errors[field_at(at, field)] = "only an assistant message carries reasoning, as text"
        elif value or "reasoning" not in out:
            out["reasoning"] = value
    for field, value in message.items():
        if field not in MESSAGE_FIELDS and field not in REASONING_FIELDS and value is not None:
            errors[field_at(at, field)] = "is not a message field the playground keeps; remove it"
    return out, errors


def clean_message(message: Any, at: str = "", *, partial: bool = False) -> dict:
    """`message_problems`' fields, or Invalid naming every bad field."""
    out, errors = message_problems(message, at, partial=partial)
    if errors:
        raise Invalid(errors)
    return out

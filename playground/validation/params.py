"""Validation of a run request: every parameter the seed relays document, with their ranges
(`PARAMETERS`, the one parameter table), the model, the system prompt, the extra body;
and the wire body built from them, or read back from an imported one.

`PARAMETERS` is also sent to the browser, so the page checks the same ranges
before the server checks them again. Unset parameters are never sent.
"""

from __future__ import annotations

import json
import math
from typing import Any

from playground.schema_verdicts import ref_problem, schema_problem
from playground.validation.base import Invalid, is_id
from playground.validation.messages import ROLES, clean_content, message_problems

# name -> (kind, minimum, maximum, help). Ranges as the seed pages give them.
PARAMETERS: dict[str, dict[str, Any]] = {
    "temperature": {"kind": "number", "min": 0, "max": 2},
    "top_p": {"kind": "number", "min": 0, "max": 1},
    "n": {"kind": "integer", "min": 1, "max": 128},
    "max_tokens": {"kind": "integer", "min": 1},
    "stop": {"kind": "stop"},
    "presence_penalty": {"kind": "number", "min": -2, "max": 2},
    "frequency_penalty": {"kind": "number", "min": -2, "max": 2},
    "repetition_penalty": {"kind": "number", "min": 0, "max": 2},
    "top_k": {"kind": "integer", "min": 1, "max": 128},
    "min_p": {"kind": "number", "min": 0, "max": 1},
    "seed": {"kind": "integer"},
    "user": {"kind": "string"},
    "stream": {"kind": "boolean"},
    "stream_options": {"kind": "stream_options"},
    "logit_bias": {"kind": "logit_bias"},
    "logprobs": {"kind": "boolean"},
    "top_logprobs": {"kind": "integer", "min": 0, "max": 20},
    "tools": {"kind": "tools"},
    "tool_choice": {"kind": "tool_choice"},
    "response_format": {"kind": "response_format"},
    "separate_reasoning": {"kind": "boolean"},
    "enable_thinking": {"kind": "boolean"},
}
RESERVED = {"model", "messages"}
MODEL_MAX = 255  # Run.model and Preset.model
EXPORT_META_KEY = "playground_export"  # playground.exports' metadata key: never sent


def _is_number(value: Any) -> bool:
    # JSON parsing in Python accepts NaN, Infinity and 1e400 (inf): no relay does.
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return isinstance(value, list) and any(_non_finite(v) for v in value)


def parameter_problem(name: str, value: Any) -> str | None:
    """Why a value sent as `name` is refused, or None: a known parameter's own check, and
    for any field, no NaN or Infinity anywhere in it."""
    spec = PARAMETERS.get(name)
    problem = CHECKS[spec["kind"]](value, spec) if spec else None
    if problem is None and _non_finite(value):
        problem = "must not contain NaN or Infinity"
    return problem


def _range(value: float, spec: dict) -> str | None:
    low, high = spec.get("min"), spec.get("max")
    if low is not None and high is not None and not low <= value <= high:
        return f"must be between {low} and {high}"
    if low is not None and value < low:
        return f"must be at least {low}"
    if high is not None and value > high:
        return f"must be at most {high}"
    return None


def check_number(value: Any, spec: dict) -> str | None:
    return "must be a number" if not _is_number(value) else _range(value, spec)


def check_integer(value: Any, spec: dict) -> str | None:
    if not _is_number(value) or value != int(value):
        return "must be a whole number"
    return _range(value, spec)


def check_boolean(value: Any, spec: dict) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def check_string(value: Any, spec: dict) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def check_stop(value: Any, spec: dict) -> str | None:
    if isinstance(value, str):
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        return "must be a string or a list of non-empty strings"
    return "can hold at most 4 sequences" if len(value) > 4 else None


def check_stream_options(value: Any, spec: dict) -> str | None:
    if not isinstance(value, dict):
        return 'must be an object such as {"include_usage": true}'
    if "include_usage" in value and not isinstance(value["include_usage"], bool):
        return "include_usage must be true or false"
    return None


def check_logit_bias(value: Any, spec: dict) -> str | None:
    if not isinstance(value, dict):
        return "must be an object mapping token ids to a bias"
    for token, bias in value.items():
        if not str(token).lstrip("-").isdigit():
            return f"key {token!r} is not a token id (a whole number)"
        if not _is_number(bias) or not -100 <= bias <= 100:
            return f"bias for token {token} must be between -100 and 100"
    return None


def check_tools(value: Any, spec: dict) -> str | None:
    if not isinstance(value, list):
        return "must be a list of tools"
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f'tool {i} needs {{"type": "function", "function": {{"name": …}}}}'
        if "parameters" in function and (problem := schema_problem(function["parameters"])):
            return f"tool {i} ({function['name']}): parameters {problem}"
    return None


def check_tool_choice(value: Any, spec: dict) -> str | None:
    if value in ("none", "auto", "required"):
        return None
    if isinstance(value, dict) and isinstance((value.get("function") or {}).get("name"), str):
        return None
    return 'must be "none", "auto", "required" or {"type": "function", "function": {"name": …}}'


def check_response_format(value: Any, spec: dict) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        return 'type must be "text", "json_object" or "json_schema"'
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            return "json_schema needs a name"
        # The answer is checked against it, so every $ref must resolve within it.
        given = schema.get("schema", True)
        if problem := schema_problem(given) or ref_problem(given):
            return f"json_schema.schema {problem}"
    return None


CHECKS = {name[6:]: fn for name, fn in globals().items() if name.startswith("check_")}


def clean_params(params: Any) -> dict:
    """The parameters to send, or Invalid naming every bad field and why."""
    if not isinstance(params, dict):
        raise Invalid({"params": "must be an object"})
    errors = {}
    for name, value in params.items():
        if name not in PARAMETERS:
            errors[name] = "is not a known parameter; put it in the extra body instead"
        elif problem := parameter_problem(name, value):
            errors[name] = problem
    if "top_logprobs" in params and params.get("logprobs") is not True:
        errors.setdefault("top_logprobs", "needs logprobs set to true")
    if "stream_options" in params and params.get("stream") is not True:
        errors.setdefault("stream_options", "is only allowed when stream is true")
    if errors:
        raise Invalid(errors)
    return dict(params)


def clean_model(model: Any, errors: dict, *, required: bool = True) -> str:
    """A model name, stripped; its problem goes in `errors` under `model`."""
    if not isinstance(model, str) or (required and not model.strip()):
        errors["model"] = "choose or type a model" if required else "must be text"
        return ""
    if len(model.strip()) > MODEL_MAX:
        errors["model"] = f"must be at most {MODEL_MAX} characters"
    return model.strip()


def clean_title(value: Any, default: str = "") -> str:
    """A conversation's title: text, cut to the column's 200 characters."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise Invalid({"title": "must be text"})
    return value.strip()[:200]


def clean_extra(extra: Any) -> dict:
    if extra in (None, ""):
        return {}
    if not isinstance(extra, dict):
        raise Invalid({"extra_body": "must be a JSON object"})
    clash = sorted(RESERVED & extra.keys())
    if clash:
        raise Invalid({"extra_body": f"cannot set {', '.join(clash)}"})
    # What it sets goes over the parameters: a known one is held to the same ranges.
    for name, value in extra.items():
        if problem := parameter_problem(name, value):
            raise Invalid({"extra_body": f"{name} {problem}"})
    return extra


def clean_submission(payload: Any) -> dict:
    """Validate a submit request: provider, model, message, system prompt, params."""
    if not isinstance(payload, dict):
        raise Invalid({"body": "must be a JSON object"})
    errors = {}
    model = clean_model(payload.get("model"), errors)
    if not is_id(payload.get("provider")):
        errors["provider"] = "choose a provider"
    if not isinstance(payload.get("continue", False), bool):
        errors["continue"] = "must be true or false"
    system = payload.get("system", "")
    if not isinstance(system, str):
        errors["system"] = "must be text"
    message = payload.get("message", "")
    try:
        message = clean_content(message, "message")
    except Invalid as exc:
        errors.update(exc.errors)
    if message == "" and not payload.get("continue"):
        errors["message"] = "write a message"
    if not isinstance(payload.get("send_reasoning", False), bool):
        errors["send_reasoning"] = "must be true or false"
    for clean, key in ((clean_params, "params"), (clean_extra, "extra_body")):
        try:
            payload[key] = clean(payload.get(key, {} if key == "params" else None))
        except Invalid as exc:
            errors.update(exc.errors)
    if errors:
        raise Invalid(errors)
    return {
        "provider": payload["provider"],
        "model": model,
        "system": system,
        "message": message,
        "params": payload["params"],
        "extra_body": payload["extra_body"],
        "send_reasoning": payload.get("send_reasoning", False),
    }


def build_body(model: str, messages: list[dict], params: dict, extra: dict) -> dict:
    """The wire body: only what the user set, plus include_usage when streaming."""
    body: dict[str, Any] = {"model": model, "messages": messages, **params}
    if body.get("stream") and "stream_options" not in body:
        # Usage only arrives in the last chunk, and only when asked for.
        body["stream_options"] = {"include_usage": True}
    body.update(extra)
    return body


def split_body(body: dict) -> dict:
    """An imported wire body, as the page's fields: model, system prompt, earlier turns,
    the message to send, parameters, extra body, and what was skipped and why."""
    params, extra, skipped = {}, {}, {}
    for name, value in body.items():
        if name in RESERVED or name == EXPORT_META_KEY:
            continue
        spec = PARAMETERS.get(name)
        if spec is None:
            extra[name] = value
        elif value == {} and spec["kind"] not in ("stream_options", "logit_bias", "response_format"):
            skipped[name] = "was a placeholder ({}), left unset"
        elif problem := parameter_problem(name, value):
            skipped[name] = problem
        else:
            params[name] = value
    if "stream_options" in params and params.get("stream") is not True:
        skipped["stream_options"] = params.pop("stream_options") and "is only allowed when stream is true"
    messages = imported_messages(body.get("messages") or [])
    system = ""
    if messages and messages[0]["role"] == "system" and isinstance(messages[0]["content"], str):
        system = messages.pop(0)["content"]
    message = messages.pop()["content"] if messages and messages[-1]["role"] == "user" else ""
    return {
        "model": body.get("model") if isinstance(body.get("model"), str) else "",
        "system": system,
        "history": messages,
        "message": message,
        "params": params,
        "extra_body": extra,
        "skipped": skipped,
    }


def imported_messages(given: list) -> list[dict]:
    """A pasted body's messages, read leniently (a role it lacks is the user's, a content
    part without a type is text, …) and then held to the message rules; Invalid names
    each bad field (`messages[2].tool_call_id`)."""
    messages, errors = [], {}
    for i, message in enumerate(given):
        if isinstance(message, dict):
            cleaned, problems = message_problems(_imported_message(message), f"messages[{i}]")
            messages.append(cleaned)
            errors.update(problems)
    if errors:
        raise Invalid(errors)
    return messages


def _imported_message(message: dict) -> dict:
    role = message.get("role") if message.get("role") in ROLES else "user"
    content = message.get("content", "")
    if isinstance(content, dict):  # one part written as an object, as seed 002's template does
        content = [content]
    if isinstance(content, list):
        content = [_imported_part(p) for p in content if isinstance(p, dict)] or ""
    elif not isinstance(content, str):
        content = json.dumps(content)
    out = {"role": role, "content": content}
    for key in ("name", "tool_call_id", "tool_calls"):
        if message.get(key):
            out[key] = message[key]
    return out


def _imported_part(part: dict) -> dict:
    kind = part.get("type")
    if kind in ("image_url", "video_url") and isinstance(part.get(kind), str):
        return {"type": kind, kind: {"url": part[kind]}}
    if kind in ("image_url", "video_url"):
        return {"type": kind, kind: part.get(kind)}
    return {"type": "text", "text": str(part.get("text", ""))}

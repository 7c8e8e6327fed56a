"""Checks on an answer that the request asked for: structured output and tool schemas.

With `response_format: json_schema` every choice is validated against the schema
(the verdict lists each failing path); with `json_object`, whether it parses.
`jsonschema` does the validating: the JSON Schema rules are its job, not ours.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema.validators import validator_for

MAX_ERRORS = 20
FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.DOTALL)


def json_path(parts) -> str:
    """`$.items[0].name` for jsonschema's absolute_path."""
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a valid JSON Schema (under the draft it declares), or None."""
    if not isinstance(schema, dict | bool):
        return "must be a JSON Schema object"
    try:
        validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        where = json_path(exc.absolute_path)
        return f"is not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where != "$" else "")
    return None


def check_json(text: str, schema: dict | None) -> dict:
    """{"valid": bool, "errors": [...]} for one answer."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        fenced = FENCE.match(text)
        if fenced:
            try:
                json.loads(fenced.group(1))
            except ValueError:
                pass
            else:
                return {"valid": False, "errors": ["the JSON is wrapped in a Markdown code fence"]}
        return {"valid": False, "errors": [f"not valid JSON: {exc}"]}
    if schema is None:
        return {"valid": True, "errors": []}
    validator = validator_for(schema)(schema)
    found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    errors = [f"{json_path(e.absolute_path)}: {e.message}" for e in found[:MAX_ERRORS]]
    if len(found) > MAX_ERRORS:
        errors.append(f"… and {len(found) - MAX_ERRORS} more")
    return {"valid": not found, "errors": errors}


def output_checks(request_body: dict, choices: list[dict]) -> list[dict] | None:
    """One verdict per choice when the request asked for JSON output; else None."""
    fmt = request_body.get("response_format") if isinstance(request_body, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_object", "json_schema"):
        return None
    schema = None
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is not None and schema_problem(schema):
            schema = None  # refused at submit; an imported old run may still hold one
    verdicts = []
    for choice in choices:
        if choice.get("tool_calls") and not choice.get("content"):
            continue
        verdict = check_json(choice.get("content") or "", schema)
        verdicts.append({"index": choice["index"], "kind": kind, **verdict})
    return verdicts

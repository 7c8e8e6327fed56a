"""Checks on an answer that the request asked for: structured output and tool schemas.

With `response_format: json_schema` every choice is validated against the schema
(the verdict lists each failing path); with `json_object`, whether it parses.
`jsonschema` does the validating: the JSON Schema rules are its job, not ours.

Nothing is ever fetched: a `$ref` resolves within the schema (or to a JSON Schema
meta-schema, which `jsonschema` carries), else the schema is refused at submit
(`ref_problem`) and, in a run stored before that, the verdict says so. A run's
verdicts are computed once, as it ends, and stored with it (`Run.checks`).
"""

from __future__ import annotations

import json
import re
from typing import Any

import referencing.jsonschema
from jsonschema import exceptions as schema_errors
from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

MAX_ERRORS = 20
FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.DOTALL)


def _retrieve_nothing(uri: str) -> Resource:
    raise NoSuchResource(ref=uri)


# Where a `$ref` may lead: the schema itself (each validator adds it as its root) and the
# meta-schemas jsonschema validates with (it adds those too). Without a registry,
# jsonschema would GET any other address, with no timeout.
LOCAL_ONLY = Registry(retrieve=_retrieve_nothing)


REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def not_in_schema(ref: str) -> str:
    shown = ref if len(ref) <= 200 else ref[:200] + "…"
    return f"refers to {shown!r}, which is not in the schema (nothing outside it is fetched)"


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


def ref_problem(schema: Any) -> str | None:
    """The first `$ref` of a valid `schema` that does not resolve within it, in words; else None."""
    if not isinstance(schema, dict):
        return None
    dialect = validator_for(schema).META_SCHEMA["$schema"]
    root = referencing.jsonschema.specification_with(dialect).create_resource(schema)
    resolver = SPECIFICATIONS.combine(LOCAL_ONLY).resolver_with_root(root)
    pending = [(resolver, root)]
    while pending:  # every subschema the validator could apply, with its base URI
        resolver, resource = pending.pop()
        contents = resource.contents if isinstance(resource.contents, dict) else {}
        for ref in (contents.get(keyword) for keyword in REF_KEYWORDS):
            if not isinstance(ref, str):
                continue
            try:
                resolver.lookup(ref)
            except Unresolvable:
                return not_in_schema(ref)
        pending.extend((resolver.in_subresource(sub), sub) for sub in resource.subresources())
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
    validator = validator_for(schema)(schema, registry=LOCAL_ONLY)
    try:
        found = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    except Unresolvable as exc:  # a schema stored before `ref_problem` refused it at submit
        return {"valid": False, "errors": ["schema " + not_in_schema(exc.ref)]}
    except RecursionError:  # e.g. {"$ref": "#"} applied to itself without end
        return {"valid": False, "errors": ["schema refers to itself without end; it cannot be applied"]}
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
    schema, unusable = None, None
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        # Both are refused at submit; a run stored before may still hold such a schema.
        if schema is not None and (schema_problem(schema) or (unusable := ref_problem(schema))):
            schema = None
    verdicts = []
    for choice in choices:
        if choice.get("tool_calls") and not choice.get("content"):
            continue
        verdict = check_json(choice.get("content") or "", schema)
        if unusable and verdict["valid"]:  # JSON, but there is nothing to check it against
            verdict = {"valid": False, "errors": [f"schema {unusable}"]}
        verdicts.append({"index": choice["index"], "kind": kind, **verdict})
    return verdicts

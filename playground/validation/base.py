"""What every request body is held to: JSON that parses, nests at most MAX_DEPTH deep and
holds only text a database stores; row ids; and `Invalid`, the refusal naming each bad field."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64  # nesting of any JSON the playground reads from a request
ID_MAX = 2**63 - 1  # the largest id a database's bigint holds


class Invalid(Exception):
    """A refused request: `errors` maps each bad field to why; `status` is the HTTP status
    to answer (400, or 413 and 415 for a body that is too large or not JSON); `message`,
    the words for all of it (every field and why, unless given)."""

    def __init__(self, errors: dict[str, str], status: int = 400, *, message: str | None = None) -> None:
        super().__init__(message or "; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
        self.status = status


def is_id(value: Any) -> bool:
    """A row id as a request may name one: a positive whole number a bigint holds (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= ID_MAX


class IdConverter:
    """`<id:name>` in URL patterns: a row id; anything else (0, past a bigint) is a 404."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= ID_MAX:
            raise ValueError(value)
        return number

    def to_url(self, value: int) -> str:
        return str(value)


# ---------------------------------------------------------------------------- JSON bodies

# A JSON string, closed or running to the end of the text: every `"` outside a string
# begins one, so no match fails (and none is retried from a later quote).
_STRING = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE = re.compile("[\ud800-\udfff]")


def too_deep(text: str) -> bool:
    """Whether the JSON in `text` nests deeper than MAX_DEPTH, from its brackets outside
    strings, without parsing it (so never recursing); linear in the text's length."""
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    if brackets.count("[") + brackets.count("{") <= MAX_DEPTH:  # the usual case
        return False
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_DEPTH


def parse_json(raw: bytes | str, field: str = "body") -> Any:
    """The JSON value in a request's body (`field` names it in errors), or Invalid.

    UTF-8 only; nesting deeper than MAX_DEPTH is refused before it is parsed; no string or
    key may hold a NUL or a lone surrogate, which no database column stores (the refusal
    names where, as `messages[0].content`). NaN and Infinity parse here and are refused
    by the fields' own checks (`parameter_problem`).
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid({field: f"is not UTF-8 text (byte {exc.start} is not UTF-8)"}) from None
    if too_deep(raw):
        raise Invalid({field: f"nests deeper than {MAX_DEPTH} levels"})
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Invalid(
            {field: f"is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"}
        ) from None
    except ValueError:  # an integer of more than 4300 digits
        raise Invalid({field: "is not valid JSON (a number is too long)"}) from None
    if problem := text_problem(value):
        at, why = problem
        raise Invalid({at or field: why})
    return value


def text_problem(value: Any, at: str = "") -> tuple[str, str] | None:
    """The first string (or key) in `value` that no database stores: (its path below `at`,
    such as `messages[0].content`, and why), or None."""
    if isinstance(value, str):
        return (at, why) if (why := _unstorable(value)) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if why := _unstorable(key):
                return at, f"has a key that {why}"
            if problem := text_problem(item, f"{at}.{key}" if at else key):
                return problem
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if problem := text_problem(item, f"{at or 'body'}[{i}]"):
                return problem
    return None


def _unstorable(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    if not text.isascii() and _SURROGATE.search(text):
        return "contains a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
    return None

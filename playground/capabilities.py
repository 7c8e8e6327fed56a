"""What a provider does with each parameter: its capability profile, and the Probe that fills it.

A profile is stored on `Provider.capabilities`:

    {"probed_at": iso time, "model": "the model probed",
     "parameters": {"top_k": {"status": "rejected", "note": "…"}, …},
     "reasoning_field": "reasoning_content" | "reasoning" | "think" | None,
     "streams_usage": True | False | None,
     "omit_rejected": False}

Statuses, from what the probe could see:
- `honoured`: the effect showed (stop cut the text, n gave two choices, …);
- `accepted`: answered without error, but the effect cannot be seen from outside
  (sampling parameters such as temperature or top_k);
- `ignored`: answered without error, and the effect was missing;
- `rejected`: the relay refused the request naming it (HTTP 400/422);
- `unknown`: the probe could not tell (rate limit, 5xx, timeout, uncooperative model).

Each probe is one small request (two or four for `seed`), sent in parallel on
a few threads of the probe's own; none of it is sent with the user's messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from playground.schema_verdicts import check_json
from playground.upstream import (
    Accumulator,
    ChatStream,
    Deadlines,
    HTTPStatusError,
    UpstreamError,
    Usage,
)

HONOURED, ACCEPTED, IGNORED, REJECTED, UNKNOWN = "honoured", "accepted", "ignored", "rejected", "unknown"
FLAGGED = (IGNORED, REJECTED)
REJECTING_STATUSES = (400, 422)
WORDS = "alpha beta gamma delta epsilon zeta eta theta"
PROMPT = f"Reply with exactly these words and nothing else: {WORDS}"
JSON_PROMPT = 'Reply with a JSON object whose key "ok" is true.'
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# Accepted or rejected is all a probe can tell about these from outside.
SAMPLING = {
    "temperature": 0.5,
    "top_p": 0.9,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.1,
    "repetition_penalty": 1.05,
    "top_k": 40,
    "min_p": 0.05,
    "user": "playground-probe",
    "logit_bias": {"50256": -100},
}
DEADLINES = Deadlines(connect=10, first_byte=45, idle=30, total=60)
WORKERS = 4
# Probes hold threads for up to a minute: a few at a time per process, the rest are told to wait.
running = threading.BoundedSemaphore(2)


class ProbeBusy(Exception):
    pass


class ProbeFailed(Exception):
    """The plain request failed: nothing else can be learnt."""


@dataclass
class Reply:
    """What one probe request got back."""

    status: int | None = None
    error: str = ""
    choices: list[dict] = field(default_factory=list)
    usage: Usage | None = None
    streamed: bool = False
    reasoning_field: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def rejected(self) -> bool:
        return self.status in REJECTING_STATUSES

    @property
    def text(self) -> str:
        return self.choices[0]["content"] if self.choices else ""

    def verdict(self, seen: bool | None, what: str) -> tuple[str, str]:
        """A status for one parameter: errors first, then whether its effect showed."""
        if self.rejected:
            return REJECTED, f"HTTP {self.status}: {self.error}"
        if not self.ok:
            return UNKNOWN, self.error
        if seen is None:
            return ACCEPTED, "answered without error; the effect cannot be seen from outside"
        if seen:
            return HONOURED, what
        return IGNORED, "answered, but " + what.replace("gave", "did not give", 1)


def ask(target, body: dict) -> Reply:
    stream = ChatStream(
        base_url=target.base_url,
        api_key=target.api_key,
        body=body,
        extra_headers=target.headers,
        deadlines=DEADLINES,
        max_retries=0,
        demo=target.is_demo,
    )
    acc = Accumulator()
    try:
        for chunk in stream:
            acc.apply(chunk)
    except HTTPStatusError as exc:
        return Reply(status=exc.status, error=exc.message)
    except UpstreamError as exc:
        return Reply(status=stream.status, error=exc.message)
    content_type = {k.lower(): v for k, v in stream.response_headers.items()}.get("content-type", "")
    return Reply(
        status=stream.status,
        choices=acc.state(),
        usage=acc.usage,
        streamed="text/event-stream" in content_type,
        reasoning_field=acc.reasoning_field,
    )


# ---------------------------------------------------------------------------- the probes
# Each takes `send(**params) -> Reply` (the plain request plus params) and the plain
# request's reply, and returns {parameter: (status, note)} plus profile facts under "_".


def probe_stream(send, plain: Reply) -> dict:
    reply = send(stream=True, stream_options={"include_usage": True})
    found = {
        "stream": reply.verdict(reply.streamed, "gave an SSE stream"),
        "stream_options": reply.verdict(reply.usage is not None, "gave usage in the last chunk"),
    }
    if reply.ok and reply.streamed:
        found["_"] = {"streams_usage": reply.usage is not None}
    return found


def probe_max_tokens(send, plain: Reply) -> dict:
    reply = send(max_tokens=3)
    choice = reply.choices[0] if reply.choices else {}
    if reply.usage and reply.usage.completion_tokens is not None:
        seen = reply.usage.completion_tokens <= 3 or choice.get("finish_reason") == "length"
    else:
        seen = choice.get("finish_reason") == "length" or (len(reply.text.split()) <= 3 if reply.ok else None)
    return {"max_tokens": reply.verdict(seen, "gave at most 3 tokens")}


def probe_n(send, plain: Reply) -> dict:
    reply = send(n=2)
    return {"n": reply.verdict(len(reply.choices) == 2, "gave 2 choices")}


def probe_stop(send, plain: Reply) -> dict:
    reply = send(stop=["gamma"])
    # Only a plain answer that says "gamma" shows whether stop cut it.
    seen = None if "gamma" not in plain.text else "gamma" not in reply.text
    return {"stop": reply.verdict(seen, 'gave text cut before "gamma"')}


def probe_logprobs(send, plain: Reply) -> dict:
    reply = send(logprobs=True, top_logprobs=2)
    entries = (reply.choices[0]["logprobs"] or []) if reply.choices else []
    with_top = [e for e in entries if len(e.get("top_logprobs") or []) == 2]
    return {
        "logprobs": reply.verdict(bool(entries), "gave token logprobs"),
        "top_logprobs": reply.verdict(bool(with_top) if entries else False, "gave 2 alternatives per token"),
    }


def probe_seed(send, plain: Reply) -> dict:
    seeded = [send(seed=4242, temperature=1) for _ in range(2)]
    unseeded = [send(temperature=1) for _ in range(2)]
    failed = next((r for r in seeded if not r.ok), None)
    if failed:
        return {"seed": failed.verdict(None, "")}
    if seeded[0].text != seeded[1].text:
        return {"seed": (IGNORED, "answered, but the same seed gave different answers")}
    if all(r.ok for r in unseeded) and unseeded[0].text != unseeded[1].text:
        return {"seed": (HONOURED, "the same seed gave the same answer; without it answers differed")}
    return {"seed": (ACCEPTED, "the same seed gave the same answer, but so did no seed")}


def probe_tools(send, plain: Reply) -> dict:
    reply = send(
        messages=[{"role": "user", "content": "What time is it in Paris? Use the get_time tool."}],
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = (reply.choices[0]["tool_calls"] or []) if reply.choices else []
    seen = any(c["function"]["name"] == "get_time" for c in calls)
    return {
        "tools": reply.verdict(seen, "gave a call of the offered function"),
        "tool_choice": reply.verdict(seen, "gave the call it asked for"),
    }


def probe_response_format(send, plain: Reply) -> dict:
    as_object = send(
        messages=[{"role": "user", "content": JSON_PROMPT}], response_format={"type": "json_object"}
    )
    as_schema = send(
        messages=[{"role": "user", "content": JSON_PROMPT}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "probe", "strict": True, "schema": SCHEMA},
        },
    )
    both = as_object.verdict(check_json(as_object.text, None)["valid"], "gave a JSON answer")
    schema = as_schema.verdict(check_json(as_schema.text, SCHEMA)["valid"], "gave JSON matching the schema")
    # One name in the panel: json_schema's verdict when json_object worked too.
    worst = schema if both[0] == HONOURED or schema[0] in FLAGGED else both
    return {"response_format": worst}


def probe_reasoning(send, plain: Reply) -> dict:
    found: dict[str, Any] = {}
    fields = [plain.reasoning_field]
    for name in ("separate_reasoning", "enable_thinking"):
        reply = send(**{name: True})
        fields.append(reply.reasoning_field)
        found[name] = reply.verdict(bool(reply.reasoning_field), "gave reasoning")
    field_name = next((f for f in fields if f), None)
    if field_name:
        found["_"] = {"reasoning_field": field_name}
    return found


def probe_sampling(send, plain: Reply) -> dict:
    return {name: send(**{name: value}).verdict(None, "") for name, value in SAMPLING.items()}


PROBES: list[Callable[[Callable[..., Reply], Reply], dict]] = [
    probe_stream,
    probe_max_tokens,
    probe_n,
    probe_stop,
    probe_logprobs,
    probe_seed,
    probe_tools,
    probe_response_format,
    probe_reasoning,
    probe_sampling,
]


def probe(target, model: str, *, previous: dict | None = None) -> dict:
    """Probe `target` with `model`; the new profile (keeping the owner's settings)."""
    if not running.acquire(blocking=False):
        raise ProbeBusy("Other probes are running on this server; try again in a minute.")
    try:
        base = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 128}

        def send(**params) -> Reply:
            return ask(target, {**base, **params})

        plain = send()
        if not plain.ok:
            raise ProbeFailed(f"The plain request failed, so nothing could be probed: {plain.error}")
        parameters: dict[str, dict] = {}
        facts: dict[str, Any] = {"reasoning_field": plain.reasoning_field, "streams_usage": None}
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="probe") as pool:
            for found in pool.map(lambda check: check(send, plain), PROBES):
                facts.update(found.pop("_", {}))
                for name, (status, note) in found.items():
                    parameters[name] = {"status": status, "note": note}
    finally:
        running.release()
    return {
        "probed_at": timezone.now().isoformat(),
        "model": model,
        "parameters": dict(sorted(parameters.items())),
        **facts,
        "omit_rejected": bool((previous or {}).get("omit_rejected")),
    }


# ---------------------------------------------------------------------------- using a profile


def apply_profile(profile: dict, params: dict, extra: dict) -> tuple[dict, dict]:
    """The parameters to send, and notes for the inspector:
    {"unsent": {name: why}, "ignored": {name: why}} (empty lists are left out)."""
    known = (profile or {}).get("parameters") or {}
    when = (profile or {}).get("probed_at", "")[:10]
    unsent: dict[str, str] = {}
    ignored: dict[str, str] = {}
    send = {}
    for name, value in params.items():
        entry = known.get(name) or {}
        status = entry.get("status")
        if name in extra:
            unsent[name] = "replaced by the extra body's value"
        elif status == REJECTED and profile.get("omit_rejected"):
            unsent[name] = f"left out: this provider rejects it (probe {when}: {entry.get('note', '')})"
            continue
        elif status in FLAGGED:
            ignored[name] = f"this provider {status} it in the probe of {when}: {entry.get('note', '')}"
        send[name] = value
    notes = {}
    if unsent:
        notes["unsent"] = unsent
    if ignored:
        notes["ignored"] = ignored
    return send, notes

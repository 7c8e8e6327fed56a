"""The built-in Demo relay: an OpenAI-compatible endpoint inside the app.

Models: `demo-echo` streams back the last user message token by token;
`demo-lorem` writes deterministic text (from `seed` and the choice index), as
long as `max_tokens` asks (200 tokens when unset). It honours `stream`,
`stream_options.include_usage`, `n`, `stop`, `max_tokens`, `seed` and, as a
demo-only body field, `tokens_per_second` (default
`PLAYGROUND_DEMO_TOKENS_PER_SECOND`). It answers a logged-in session or a
bearer key equal to a Demo provider's key (401 otherwise), refuses a request
for more than `PLAYGROUND_DEMO_MAX_TOKENS` tokens (n × max_tokens; 400), and with
`PLAYGROUND_DEMO=0` its routes answer 404. Usage is counted with
`playground.tokens`, so it is exact for this relay.

It also plays the relay features the seed pages document:
- `logprobs` / `top_logprobs`: well-formed, deterministic values per token;
- `tools`: a tool call (id and name, then argument fragments; arguments shaped by
  the function's JSON Schema, finish_reason `tool_calls`) when `tool_choice` is
  `required` or names a function, or, with `auto`, when the last user message
  names one; `tool_choice: "none"` answers in text;
- `response_format`: `json_object` gives `{"answer": …}`; `json_schema` gives an
  instance of the schema;
- `separate_reasoning` / `enable_thinking`: a short `reasoning_content` first
  (`enable_thinking: false` turns it off)."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import random
import time
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from playground import access
from playground.keys import KeyDecryptError
from playground.models import DEMO_MODELS, Provider
from playground.tokens import content_text, count_prompt_tokens, split_tokens

LOREM = (  # noqa: SIM905 - a sentence reads better than a list of 63 strings
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt "
    "culpa qui officia deserunt mollit anim id est laborum"
).split()
DEFAULT_LOREM_TOKENS = 200


def error(status: int, message: str, code: str, param: str | None = None) -> JsonResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return JsonResponse(body, status=status)


def lorem_tokens(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    tokens: list[str] = []
    sentence = 0
    while len(tokens) < count:
        word = rng.choice(LOREM)
        if sentence == 0:
            word = word.capitalize()
        tokens.append(word if not tokens else " " + word)
        sentence += 1
        if sentence >= rng.randint(6, 14) and len(tokens) < count:
            tokens.append(".")
            sentence = 0
    return tokens[:count]


def answer_tokens(body: dict, choice: int) -> list[str]:
    if body["model"] == "demo-echo":
        return split_tokens(last_user_text(body)) or ["(nothing to echo)"]
    seed = body.get("seed") or 0
    # With max_tokens the text runs on past it, so it ends cut with finish_reason "length".
    limit = body.get("max_tokens")
    return lorem_tokens(seed * 1000 + choice, limit + 1 if limit else DEFAULT_LOREM_TOKENS)


def generate(body: dict, choice: int) -> tuple[list[str], str]:
    """The content tokens of one choice and its finish_reason, after max_tokens and stop."""
    tokens = json_tokens(body) or answer_tokens(body, choice)
    finish = "stop"
    limit = body.get("max_tokens")
    if limit is not None and len(tokens) > limit:
        tokens, finish = tokens[:limit], "length"
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    text = "".join(tokens)
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    if cut >= 0:
        # OpenAI semantics: the stop sequence itself is not returned.
        tokens, finish = split_tokens(text[:cut]), "stop"
    return tokens, finish


def last_user_text(body: dict) -> str:
    last = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
    return content_text(last.get("content"))


def json_tokens(body: dict) -> list[str]:
    """With response_format json_object or json_schema: valid JSON, schema-shaped."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        return split_tokens(json.dumps({"answer": last_user_text(body)}, ensure_ascii=False))
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return split_tokens(json.dumps(example_for(schema), ensure_ascii=False))
    return []


def example_for(schema: dict):
    """A value that satisfies a (simple) JSON Schema: objects, arrays, enums, scalars."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        return {name: example_for(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_for(schema.get("items") or {})] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        value = schema.get("minimum", 1)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "demo"


def tool_to_call(body: dict) -> dict | None:
    """The function a demo answer calls: as tool_choice asks, or one the message names."""
    tools = [t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == wanted), None)
    if choice == "required":
        return tools[0]
    text = last_user_text(body)
    return next((t for t in tools if t.get("name") and t["name"] in text), None)


def tool_steps(function: dict, choice: int) -> list[dict]:
    """A tool call streamed as OpenAI does: id and name first, then argument fragments."""
    arguments = json.dumps(example_for(function.get("parameters") or {"type": "object"}))
    first = {"index": 0, "id": f"call_demo_{choice}", "type": "function"}
    steps = [{"tool_calls": [{**first, "function": {"name": function["name"], "arguments": ""}}]}]
    size = max(1, len(arguments) // 3)
    for start in range(0, len(arguments), size):
        piece = arguments[start : start + size]
        steps.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    return steps


def wants_reasoning(body: dict) -> bool:
    if body.get("enable_thinking") is False:
        return False
    return bool(body.get("separate_reasoning") or body.get("enable_thinking"))


def logprob_entry(token: str, top: int) -> dict:
    """Well-formed, deterministic logprobs: the token first, alternatives below it."""
    value = -((sum(token.encode()) % 250) / 100)
    alternatives = [
        {"token": token, "logprob": value, "bytes": list(token.encode())},
        *(
            {
                "token": f"{token.strip()}{i}",
                "logprob": value - i,
                "bytes": list(f"{token.strip()}{i}".encode()),
            }
            for i in range(1, top)
        ),
    ]
    return {
        "token": token,
        "logprob": value,
        "bytes": list(token.encode()),
        "top_logprobs": alternatives[:top],
    }


def answer_steps(body: dict, choice: int) -> tuple[list[tuple[dict, dict | None]], str]:
    """Every delta of one choice (with its logprobs, when asked) and its finish_reason."""
    function = tool_to_call(body)
    if function is not None:
        return [(step, None) for step in tool_steps(function, choice)], "tool_calls"
    steps: list[tuple[dict, dict | None]] = []
    if wants_reasoning(body):
        thought = f"The user wrote {len(split_tokens(last_user_text(body)))} tokens; answering plainly."
        steps += [({"reasoning_content": t}, None) for t in split_tokens(thought)]
    tokens, finish = generate(body, choice)
    top = body.get("top_logprobs") or 0
    for token in tokens:
        logprobs = {"content": [logprob_entry(token, top)]} if body.get("logprobs") else None
        steps.append(({"content": token}, logprobs))
    return steps, finish


def declare_public(method: str):
    """The Demo relay answers anyone (it checks its own key: `authorised`)."""
    return lambda view: access.declare(view, {method: access.PUBLIC})


def enabled(view):
    """The view while settings.DEMO_ENABLED, else a 404 for every method."""

    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not settings.DEMO_ENABLED:
            return error(404, "The Demo relay is turned off on this server.", "not_found")
        return await view(request, *args, **kwargs)

    return wrapper


async def authorised(request: HttpRequest) -> bool:
    """A logged-in session, or `Authorization: Bearer <key>` with the key of a Demo provider."""
    if (await request.auser()).is_authenticated:
        return True
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not given:
        return False
    async for provider in Provider.objects.filter(is_demo=True):
        try:
            key = provider.get_api_key()
        except KeyDecryptError:
            continue
        key = key.reveal() if hasattr(key, "reveal") else key
        if key and hmac.compare_digest(key.encode(), given.encode()):
            return True
    return False


def requested_tokens(body: dict) -> int:
    """The most completion tokens the body can make the relay write: n × max_tokens, where an
    unset max_tokens is the answer's own length (the echoed message, or lorem's default)."""
    limit = body.get("max_tokens")
    if limit is None:
        limit = (
            len(split_tokens(last_user_text(body))) if body["model"] == "demo-echo" else DEFAULT_LOREM_TOKENS
        )
    return body.get("n", 1) * limit


def validate(body: object) -> JsonResponse | None:
    if not isinstance(body, dict):
        return error(400, "The body must be a JSON object.", "invalid_body")
    if body.get("model") not in DEMO_MODELS:
        return error(
            404,
            f"The model `{body.get('model')}` does not exist; try {' or '.join(DEMO_MODELS)}.",
            "model_not_found",
            "model",
        )
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return error(400, "messages must be a non-empty array.", "invalid_value", "messages")
    if not all(isinstance(message, dict) for message in body["messages"]):
        return error(400, "messages must be an array of objects.", "invalid_value", "messages")
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 128:
        return error(400, "n must be an integer from 1 to 128.", "invalid_value", "n")
    limit = body.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        return error(400, "max_tokens must be an integer >= 1.", "invalid_value", "max_tokens")
    asked, cap = requested_tokens(body), settings.DEMO_MAX_TOKENS
    if asked > cap:
        field = "max_tokens" if limit is not None else "n"
        message = f"{field}: n × max_tokens asks for {asked} tokens; the Demo relay writes at most {cap}."
        return error(400, message, "invalid_value", field)
    return None


@declare_public("POST")
@enabled
@csrf_exempt
@require_POST
async def chat_completions(request: HttpRequest) -> HttpResponse:
    if not await authorised(request):
        message = "Log in, or send the Demo provider's key as `Authorization: Bearer <key>`."
        return error(401, message, "invalid_api_key")
    try:
        body = json.loads(request.body)
    except ValueError:
        return error(400, "The body is not valid JSON.", "invalid_json")
    problem = validate(body)
    if problem:
        return problem
    n = body.get("n", 1)
    choices = [answer_steps(body, i) for i in range(n)]
    prompt = count_prompt_tokens(body["messages"])
    completion = sum(len(steps) for steps, _ in choices)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    meta = {
        "id": f"chatcmpl-demo-{uuid.uuid4().hex[:12]}",
        "created": int(time.time()),
        "model": body["model"],
    }
    if not body.get("stream"):
        return JsonResponse(completion_body(meta, choices, usage))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    tps = body.get("tokens_per_second")
    tps = float(settings.DEMO_TOKENS_PER_SECOND if tps is None else tps)  # 0: as fast as possible
    response = StreamingHttpResponse(
        stream(meta, choices, usage if include_usage else None, tps),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def completion_body(meta: dict, choices: list, usage: dict) -> dict:
    return {
        **meta,
        "object": "chat.completion",
        "choices": [assembled(i, steps, finish) for i, (steps, finish) in enumerate(choices)],
        "usage": usage,
    }


def assembled(index: int, steps: list, finish: str) -> dict:
    """One non-streamed choice: the deltas folded into a message."""
    message: dict = {"role": "assistant", "content": "".join(d.get("content", "") for d, _ in steps)}
    reasoning = "".join(d.get("reasoning_content", "") for d, _ in steps)
    if reasoning:
        message["reasoning_content"] = reasoning
    calls = [d["tool_calls"][0] for d, _ in steps if "tool_calls" in d]
    if calls:
        call = {key: calls[0][key] for key in ("id", "type")}
        name = calls[0]["function"]["name"]
        call["function"] = {"name": name, "arguments": "".join(c["function"]["arguments"] for c in calls)}
        message["tool_calls"], message["content"] = [call], None
    logprobs = [entry for _, lp in steps if lp for entry in lp["content"]]
    return {
        "index": index,
        "message": message,
        "finish_reason": finish,
        "logprobs": {"content": logprobs} if logprobs else None,
    }


def sse(data: dict | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def stream(meta: dict, choices: list, usage: dict | None, tps: float):
    def chunk(index: int, delta: dict, finish: str | None = None, logprobs: dict | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**meta, "object": "chat.completion.chunk", "choices": [choice]})

    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(len(choices)):
        yield chunk(i, {"role": "assistant", "content": ""})
    longest = max(len(steps) for steps, _ in choices)
    for step in range(longest):
        delay = start + step / tps - loop.time() if tps > 0 else 0
        if delay > 0:
            await asyncio.sleep(delay)
        yield b"".join(
            chunk(i, steps[step][0], None, steps[step][1])
            for i, (steps, _) in enumerate(choices)
            if step < len(steps)
        )
    for i, (_, finish) in enumerate(choices):
        yield chunk(i, {}, finish)
    if usage:
        yield sse({**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    yield sse("[DONE]")


@declare_public("GET")
@enabled
@require_GET
async def models(request: HttpRequest) -> JsonResponse:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "demo"} for name in DEMO_MODELS]
    return JsonResponse({"object": "list", "data": data})

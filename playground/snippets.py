"""Code equivalent to a run's wire request, and requests pasted back in.

`code_for` writes curl, Python (`requests` and the official `openai` SDK) and
JavaScript `fetch` that send the same JSON body with the same headers, the key
taken from the `OPENAI_API_KEY` environment variable. `parse_request` reads a
JSON body or a curl command (as the seed pages show them) back into a body.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from playground.upstream import chat_url
from playground.validation import Invalid, parse_json

KEY_VAR = "OPENAI_API_KEY"
# Headers every client sets by itself; the rest (e.g. Accept, X-Forwarded-Host) are shown.
IMPLIED = {"authorization", "content-type", "user-agent", "accept-encoding", "host"}


def shown_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in IMPLIED}


def code_for(base_url: str, body: dict, headers: dict[str, str]) -> dict[str, str]:
    extra = shown_headers(headers)
    return {
        "curl": curl(base_url, body, extra),
        "python": python_requests(base_url, body, extra),
        "openai": python_openai(base_url, body, extra),
        "javascript": javascript(base_url, body, extra),
    }


def curl(base_url: str, body: dict, extra: dict[str, str]) -> str:
    lines = [f"curl {shlex.quote(chat_url(base_url))}"]
    if body.get("stream"):
        lines[0] = f"curl -N {shlex.quote(chat_url(base_url))}"
    lines.append(f'-H "Authorization: Bearer ${KEY_VAR}"')
    lines.append("-H 'Content-Type: application/json'")
    lines += [f"-H {shlex.quote(f'{k}: {v}')}" for k, v in extra.items()]
    lines.append(f"--data-raw {shlex.quote(json.dumps(body, ensure_ascii=False, indent=2))}")
    return " \\\n  ".join(lines)


def python_requests(base_url: str, body: dict, extra: dict[str, str]) -> str:
    headers = {"Authorization": "Bearer " + "{KEY}", "Content-Type": "application/json", **extra}
    header_src = json.dumps(headers, indent=4).replace(
        '"Bearer {KEY}"', f'f"Bearer {{os.environ[{KEY_VAR!r}]}}"'
    )
    read = (
        "for line in response.iter_lines():\n    if line:\n        print(line.decode())"
        if body.get("stream")
        else "print(response.json())"
    )
    return (
        "import json\nimport os\n\nimport requests\n\n"
        f"body = json.loads({_py_string(body)})\n"
        f"headers = {header_src}\n"
        f"response = requests.post({chat_url(base_url)!r}, headers=headers, json=body, "
        f"stream={bool(body.get('stream'))})\n"
        "response.raise_for_status()\n"
        f"{read}\n"
    )


def python_openai(base_url: str, body: dict, extra: dict[str, str]) -> str:
    known = {"model", "messages"} | OPENAI_ARGS
    args = {k: v for k, v in body.items() if k in known}
    extra_body = {k: v for k, v in body.items() if k not in known}
    call = ",\n    ".join(f"{k}=body[{k!r}]" for k in args)
    if extra_body:
        call += ",\n    extra_body={" + ", ".join(f"{k!r}: body[{k!r}]" for k in extra_body) + "}"
    client_args = f"base_url={base_url.rstrip('/')!r}, api_key=os.environ[{KEY_VAR!r}]"
    if extra:
        client_args += f", default_headers={extra!r}"
    read = (
        "for chunk in completion:\n    print(chunk.model_dump_json())"
        if body.get("stream")
        else "print(completion.model_dump_json())"
    )
    return (
        "import json\nimport os\n\nfrom openai import OpenAI\n\n"
        f"client = OpenAI({client_args})\n"
        f"body = json.loads({_py_string(body)})\n"
        f"completion = client.chat.completions.create(\n    {call},\n)\n"
        f"{read}\n"
    )


# Keyword arguments of openai's chat.completions.create; anything else goes in extra_body.
OPENAI_ARGS = {
    "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
    "response_format", "seed", "stop", "stream", "stream_options", "temperature", "tool_choice",
    "tools", "top_logprobs", "top_p", "user",
}  # fmt: skip


def javascript(base_url: str, body: dict, extra: dict[str, str]) -> str:
    headers = {"Authorization": "Bearer KEY", "Content-Type": "application/json", **extra}
    header_src = json.dumps(headers, indent=2).replace('"Bearer KEY"', f"`Bearer ${{process.env.{KEY_VAR}}}`")
    read = (
        "const reader = response.body.getReader();\nconst decoder = new TextDecoder();\n"
        "for (;;) {\n  const { done, value } = await reader.read();\n  if (done) break;\n"
        "  process.stdout.write(decoder.decode(value, { stream: true }));\n}"
        if body.get("stream")
        else "console.log(await response.json());"
    )
    return (
        f"const body = {json.dumps(body, ensure_ascii=False, indent=2)};\n"
        f"const response = await fetch({json.dumps(chat_url(base_url))}, {{\n"
        f'  method: "POST",\n  headers: {header_src.replace(chr(10), chr(10) + "  ")},\n'
        "  body: JSON.stringify(body),\n});\n"
        f"{read}\n"
    )


def _py_string(body: dict) -> str:
    """The body as a Python string literal of its JSON: exact whatever the values."""
    return repr(json.dumps(body, ensure_ascii=False))


# ---------------------------------------------------------------------------- import


class UnreadableRequest(ValueError):
    """A pasted request that is neither a JSON body nor a curl command with one; the
    message says why, in plain words."""


def parse_request(text: str) -> dict[str, Any]:
    """A pasted request: a JSON body, or a curl command with -d/--data/--data-raw.

    Returns {"body": dict, "url": str | None, "headers": dict} with the
    Authorization header dropped (a pasted key is never stored).
    """
    text = text.strip()
    if not text:
        raise UnreadableRequest("Paste a JSON body or a curl command.")
    if text.startswith("{"):
        return {"body": _json_body(text), "url": None, "headers": {}}
    if text.startswith("curl"):
        return _curl(text)
    raise UnreadableRequest("That is neither a JSON object nor a curl command.")


def _json_body(text: str) -> dict:
    try:
        body = parse_json(text)
    except Invalid as exc:
        parse_error = next(iter(exc.errors.values())).startswith("is not valid JSON")
        raise UnreadableRequest(
            f"The JSON does not parse: {exc}" if parse_error else f"The JSON is refused: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise UnreadableRequest("The body must be a JSON object.")
    if not isinstance(body.get("messages"), list):
        raise UnreadableRequest("The body has no messages list.")
    return body


def _curl(text: str) -> dict:
    try:
        words = shlex.split(text.replace("\\\n", " "))
    except ValueError as exc:
        # Documentation pages often print a body holding an apostrophe inside '...'
        # (seed 001 does); no shell accepts it, but the intent is plain.
        lenient = _lenient_curl(text)
        if lenient is None:
            raise UnreadableRequest(f"The curl command does not parse: {exc}") from None
        return lenient
    url, headers, data = None, {}, None
    takes_value = {"-X", "--request", "-u", "--user", "-o", "--output", "-m", "--max-time"}
    i = 1
    while i < len(words):
        word = words[i]
        if word in ("-H", "--header") and i + 1 < len(words):
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif word in ("-d", "--data", "--data-raw", "--data-binary") and i + 1 < len(words):
            data = words[i + 1]
            i += 2
        elif word == "--url" and i + 1 < len(words):
            url = words[i + 1]
            i += 2
        elif word in takes_value:
            i += 2
        elif not word.startswith("-"):
            url = word
            i += 1
        else:
            i += 1
    if data is None:
        raise UnreadableRequest("The curl command has no -d/--data body.")
    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    return {"body": _json_body(data), "url": url, "headers": headers}


def _lenient_curl(text: str) -> dict | None:
    data = re.search(r"(?:-d|--data(?:-raw|-binary)?)\s+'(.*)'", text, re.S)
    if data is None:
        return None
    headers = dict(
        (name.strip(), value.strip())
        for name, _, value in (h.partition(":") for h in re.findall(r"(?:-H|--header)\s+'([^']*)'", text))
        if name.strip().lower() != "authorization"
    )
    url = re.search(r"'(https?://[^'\s]+)'", text)
    return {"body": _json_body(data.group(1)), "url": url.group(1) if url else None, "headers": headers}

"""Issue 15 §4 fuzz: every JSON endpoint, a few hundred generated bad bodies from a fixed seed.

No answer is a 5xx, and a refused request (4xx) writes no row.
"""

import itertools
import json
import random
import re

from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from playground import models
from playground.models import Conversation, Message, Preset, Provider, Run, ShareLink, token_digest

SEED = 20240604
MAX_BODY = 64 * 1024
PER_PAIR = 80
METHODS = ("POST", "PATCH", "PUT", "DELETE")
COUNTED = [Run, Message, Conversation, Preset, Provider] + (
    [models.MessageText] if hasattr(models, "MessageText") else []
)
TEXT_KEYS = ("message", "system", "model", "title", "content", "name", "text", "role", "username")
OTHER_KEYS = ("provider", "params", "extra_body", "tools", "messages", "continue", "shared", "position")
BAD_TEXTS = ("a\x00b", "\x00", "\ud800", "x\udfffy", "\ud800\x00")
BAD_NUMBERS = (1e20, 10**20, -1, 0, 1.5, True, False, None, "1", [], {})


def api_routes():
    """(route, pattern) for every URL pattern whose full route starts with `api/`."""
    found = []

    def walk(patterns, prefix):
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern) and route.startswith("api/"):
                found.append(route)

    walk(get_resolver().url_patterns, "")
    return sorted(set(found))


def nested(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = {"x": value}
    return value


class Bodies:
    """Generated request bodies: (class name, raw bytes, content type)."""

    def __init__(self, rng, provider_id):
        self.rng = rng
        self.provider_id = provider_id

    def valid_ish(self):
        body = {"provider": self.provider_id, "model": "fake-model", "message": "hi"}
        if self.rng.random() < 0.5:
            body.update(title="t", name="n", content="c", system="s")
        return body

    def as_json(self, cls, value):
        return cls, json.dumps(value).encode(), "application/json"

    def one(self):
        rng = self.rng
        kind = rng.choice(
            (
                "deep-array",
                "deep-object",
                "bad-text",
                "bad-text-part",
                "huge-number",
                "bool-for-int",
                "wrong-type",
                "oversized",
                "form",
                "multipart",
                "invalid-utf8",
                "non-object",
                "empty",
                "random-keys",
            )
        )
        body = self.valid_ish()
        if kind == "deep-array":
            depth = rng.choice((65, 100, 1000, 100000))
            return kind, b"[" * depth + (b"]" * depth if rng.random() < 0.5 else b""), "application/json"
        if kind == "deep-object":
            where = rng.choice(("extra_body", "tools", "params", "message", "body"))
            deep = nested(rng.choice((65, 200, 800)))
            if where == "body":
                return self.as_json(kind, deep)
            if where == "tools":
                body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
            else:
                body[where] = deep
            return self.as_json(kind, body)
        if kind == "bad-text":
            body[rng.choice(TEXT_KEYS)] = rng.choice(BAD_TEXTS)
            if rng.random() < 0.3:  # a bad key, not a bad value
                body[rng.choice(BAD_TEXTS)] = 1
            return self.as_json(kind, body)
        if kind == "bad-text-part":
            part = rng.choice(
                (
                    {"type": "text", "text": rng.choice(BAD_TEXTS)},
                    {"type": "image_url", "image_url": {"url": rng.choice(BAD_TEXTS)}},
                    {"type": rng.choice(BAD_TEXTS)},
                )
            )
            target = rng.choice(("message", "content", "messages"))
            body[target] = [{"role": "user", "content": [part]}] if target == "messages" else [part]
            return self.as_json(kind, body)
        if kind == "huge-number":
            key = rng.choice(("provider", "position", "params", "max_tokens", "n", "direction"))
            number = rng.choice(("1e20", "1e400", "-1e400", "-1", "100000000000000000000000", "0.5", "-0"))
            text = json.dumps(body)[:-1] + f', "{key}": {number}' + "}"
            if key == "params":
                params = f'{{"temperature": {number}, "max_tokens": {number}}}'
                text = json.dumps(body)[:-1] + f', "params": {params}' + "}"
            return kind, text.encode(), "application/json"
        if kind == "bool-for-int":
            body[rng.choice(("provider", "position", "n"))] = rng.choice((True, False))
            param = rng.choice(("max_tokens", "n", "seed", "temperature"))
            body["params"] = {param: rng.choice((True, False))}
            return self.as_json(kind, body)
        if kind == "wrong-type":
            key, value = rng.choice(
                (
                    ("message", [{"type": "image_url", "image_url": 5}]),
                    ("continue", "yes"),
                    ("params", []),
                    ("params", "x"),
                    ("messages", {}),
                    ("messages", [5]),
                    ("extra_body", []),
                    ("extra_body", "x"),
                    ("tools", {}),
                    ("tools", [5]),
                    ("shared", "yes"),
                    ("title", 5),
                    ("name", []),
                    ("model", {}),
                    ("system", 5),
                    ("content", {"a": 1}),
                    ("message", None),
                    ("provider", "1"),
                    ("provider", [1]),
                    ("role", 5),
                    ("tool_calls", "x"),
                )
            )
            body[key] = value
            if rng.random() < 0.3:
                body[rng.choice(OTHER_KEYS)] = rng.choice(BAD_NUMBERS)
            return self.as_json(kind, body)
        if kind == "oversized":
            body[rng.choice(TEXT_KEYS)] = "x" * (MAX_BODY + rng.randrange(1, 4096))
            return self.as_json(kind, body)
        if kind == "form":
            return kind, b"message=hi&provider=1", "application/x-www-form-urlencoded"
        if kind == "multipart":
            boundary = "fuzzb"
            part = 'Content-Disposition: form-data; name="message"\r\n\r\nhi'
            raw = f"--{boundary}\r\n{part}\r\n--{boundary}--\r\n"
            return kind, raw.encode(), f"multipart/form-data; boundary={boundary}"
        if kind == "invalid-utf8":
            text = json.dumps(body).encode()
            cut = rng.randrange(1, len(text))
            bad = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"))
            return kind, text[:cut] + bad + text[cut:], "application/json"
        if kind == "non-object":
            raw = rng.choice((b"5", b'"x"', b"null", b"[]", b"true", b"1e400", b"{", b"}"))
            return kind, raw, "application/json"
        if kind == "empty":
            return kind, b"", rng.choice(("application/json", "text/plain", ""))
        # random-keys: any known key, any odd value
        for _ in range(rng.randrange(1, 6)):
            body[rng.choice(TEXT_KEYS + OTHER_KEYS)] = rng.choice(BAD_NUMBERS + BAD_TEXTS)
        return self.as_json(kind, body)


class World:
    """Real objects of alice's workspace whose ids fill the routes' parameters."""

    def __init__(self, alice, workspace, provider):
        self.alice, self.workspace, self.provider = alice, workspace, provider
        self.build()

    def build(self):
        if not Provider.objects.filter(id=self.provider.id).exists():  # DELETE took it
            self.provider.pk = None
            self.provider.save()
        conversation = Conversation.objects.create(workspace=self.workspace, creator=self.alice, title="Fuzz")
        message = Message.objects.create(conversation=conversation, position=1, role="user", content="hi")
        run = Run.objects.create(
            conversation=conversation, user=self.alice, provider=self.provider, model="m", position=2
        )
        preset = Preset.objects.create(
            workspace=self.workspace, owner=self.alice, name=f"fuzz-{Preset.objects.count()}"
        )
        link = ShareLink.objects.create(
            conversation=conversation, token_hash=token_digest(f"fuzz-{ShareLink.objects.count()}")
        )
        self.ids = {
            "share_link_id": link.id,
            "conversation_id": conversation.id,
            "message_id": message.id,
            "run_id": run.id,
            "preset_id": preset.id,
            "provider_id": self.provider.id,
        }

    def url(self, route):
        def fill(match):
            name = match.group(2)
            if name not in self.ids:
                raise LookupError(f"no object to fill <{match.group(1)}:{name}> in {route}")
            return str(self.ids[name])

        return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: fill(m), route)


def counts():
    return tuple(model.objects.count() for model in COUNTED)


def test_fuzz_bad_input_never_gets_a_5xx_and_refusals_store_nothing(alice, workspace, provider, settings):
    settings.PLAYGROUND_MAX_BODY_BYTES = MAX_BODY
    settings.PLAYGROUND_MAX_STREAMS_PER_USER = 0  # a valid body is refused, not streamed
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    rng = random.Random(SEED)
    generator = Bodies(rng, provider.id)
    bodies = [generator.one() for _ in range(300)]
    world = World(alice, workspace, provider)

    routes = api_routes()
    unfilled = []
    for route in routes:
        try:
            world.url(route)
        except LookupError as exc:
            unfilled.append(str(exc))
    assert not unfilled, unfilled

    failures, sent, covered = [], 0, set()

    def send(route, method, cls, raw, content_type):
        nonlocal sent
        url = world.url(route)
        before = counts()
        response = client.generic(method, url, raw, content_type=content_type)
        sent += 1
        status = response.status_code
        if status >= 500:
            failures.append(f"{status} {method} {route} [{cls}]: {response.content[:200]!r}")
        elif status >= 400 and counts() != before:
            failures.append(f"{status} {method} {route} [{cls}] wrote rows: {before} -> {counts()}")
        if method == "DELETE" and status < 300:
            world.build()  # the deleted object's route needs a new one
        return status

    # Each route+method takes the next PER_PAIR bodies in turn: every body goes to several.
    turn = itertools.cycle(bodies)
    for route in routes:
        send(route, "GET", "get", b"", "application/json")
        for method in METHODS:
            if send(route, method, "empty", b"", "application/json") == 405:
                continue
            covered.add((route, method))
            for cls, raw, content_type in itertools.islice(turn, PER_PAIR):
                send(route, method, cls, raw, content_type)

    print(f"fuzz: {sent} requests, {len(routes)} api routes, {len(covered)} route+method pairs")
    assert routes
    assert covered
    assert not failures, f"{len(failures)} of {sent} requests failed:\n" + "\n".join(failures[:60])

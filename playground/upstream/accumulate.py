"""Folding chat.completion chunks into choices, tool calls, reasoning and usage.

REASONING_FIELDS is the one list of the delta fields relays put reasoning in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class ThinkSplitter:
    """Moves an inline `<think>…</think>` at the start of an answer into reasoning.

    Tags may arrive split across deltas, so a possible partial tag is held back
    until the next delta decides it. Only a block opening the answer counts: a
    `<think>` written later is text the model meant to show.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.inside = False
        self.started = False  # visible text has begun: no more <think> blocks
        self.closed = False  # a block has ended: drop the blank lines that follow it
        self.held = ""

    @property
    def active(self) -> bool:
        return self.inside or not self.started or bool(self.held)

    def feed(self, text: str) -> tuple[str, str]:
        """(content, reasoning) for one delta of content."""
        text, self.held = self.held + text, ""
        content, reasoning = [], []
        while text:
            if not self.inside and self.started:
                content.append(text)
                break
            if not self.inside:
                stripped = text.lstrip()
                if not stripped:  # only whitespace so far: wait for what follows
                    self.held = text
                    break
                if not stripped.startswith(self.OPEN) and not self.OPEN.startswith(stripped):
                    self.started = True
                    text = stripped if self.closed else text  # no blank lines after the block
                    continue
                text = stripped
            tag = self.CLOSE if self.inside else self.OPEN
            at = text.find(tag)
            if at >= 0:
                (reasoning if self.inside else content).append(text[:at])
                text = text[at + len(tag) :]
                self.closed = self.inside
                self.inside = not self.inside
                continue
            keep = next(
                (n for n in range(min(len(tag) - 1, len(text)), 0, -1) if tag.startswith(text[-n:])), 0
            )
            (reasoning if self.inside else content).append(text[: len(text) - keep])
            self.held = text[len(text) - keep :]
            break
        return "".join(content), "".join(reasoning)

    def flush(self) -> tuple[str, str]:
        held, self.held = self.held, ""
        return ("", held) if self.inside else (held, "")


@dataclass
class Choice:
    index: int
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict] = field(default_factory=dict)
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    role: str = "assistant"
    think: ThinkSplitter = field(default_factory=ThinkSplitter)

    def state(self) -> dict:
        return {
            "index": self.index,
            "content": "".join(self.content),
            "reasoning": "".join(self.reasoning),
            "tool_calls": [self.tool_calls[i] for i in sorted(self.tool_calls)] or None,
            "logprobs": self.logprobs or None,
            "finish_reason": self.finish_reason,
        }


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None

    @classmethod
    def parse(cls, data: dict) -> Usage:
        completion_details = data.get("completion_tokens_details") or {}
        prompt_details = data.get("prompt_tokens_details") or {}
        cached = prompt_details.get("cached_tokens", data.get("prompt_cache_hit_tokens"))
        return cls(
            prompt_tokens=_int(data.get("prompt_tokens")),
            completion_tokens=_int(data.get("completion_tokens")),
            total_tokens=_int(data.get("total_tokens")),
            reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
            cached_tokens=_int(cached),
        )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and value >= 0 else None


REASONING_FIELDS = ("reasoning_content", "reasoning")


class Accumulator:
    """Folds chunks into choices. `apply` returns the visible delta, for relaying."""

    def __init__(self) -> None:
        self.choices: dict[int, Choice] = {}
        self.usage: Usage | None = None
        self.model: str | None = None
        # Where this relay puts reasoning: a delta field, or "think" for inline <think> blocks.
        self.reasoning_field: str | None = None

    def apply(self, chunk: dict) -> list[dict]:
        if chunk.get("usage"):
            self.usage = Usage.parse(chunk["usage"])
        if self.model is None and chunk.get("model"):
            self.model = chunk["model"]
        deltas = []
        for raw in chunk.get("choices") or ():
            delta = self._apply_choice(raw)
            if delta:
                deltas.append(delta)
        return deltas

    def _apply_choice(self, raw: dict) -> dict | None:
        index = raw.get("index", 0)
        choice = self.choices.get(index)
        if choice is None:
            choice = self.choices[index] = Choice(index)
        delta = raw.get("delta") or raw.get("message") or {}
        out: dict[str, Any] = {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            text, inline_thought = choice.think.feed(text) if choice.think.active else (text, "")
            self._add_text(choice, out, text, inline_thought)
            if inline_thought and self.reasoning_field is None:
                self.reasoning_field = "think"
        # Relays moving from reasoning_content to reasoning send both, with the same text.
        name = next((n for n in REASONING_FIELDS if delta.get(n)), None)
        if name and isinstance(delta[name], str):
            self._add_text(choice, out, "", delta[name])
            self.reasoning_field = self.reasoning_field or name
        if raw.get("finish_reason") and choice.think.held:
            self._add_text(choice, out, *choice.think.flush())
        if delta.get("tool_calls"):
            out["tool_calls"] = self._apply_tool_calls(choice, delta["tool_calls"])
        logprobs = (raw.get("logprobs") or {}).get("content")
        if logprobs:
            choice.logprobs.extend(logprobs)
            out["logprobs"] = logprobs
        if raw.get("finish_reason"):
            choice.finish_reason = raw["finish_reason"]
            out["finish_reason"] = raw["finish_reason"]
        if not out:
            return None
        out["index"] = index
        return out

    @staticmethod
    def _add_text(choice: Choice, out: dict, content: str, reasoning: str) -> None:
        if content:
            choice.content.append(content)
            out["content"] = out.get("content", "") + content
        if reasoning:
            choice.reasoning.append(reasoning)
            out["reasoning"] = out.get("reasoning", "") + reasoning

    @staticmethod
    def _apply_tool_calls(choice: Choice, fragments: list[dict]) -> list[dict]:
        for position, fragment in enumerate(fragments):
            index = fragment.get("index", position)
            call = choice.tool_calls.setdefault(
                index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if fragment.get("id"):
                call["id"] = fragment["id"]
            if fragment.get("type"):
                call["type"] = fragment["type"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            arguments = function.get("arguments")
            if isinstance(arguments, dict):  # some relays send parsed arguments
                arguments = json.dumps(arguments)
            call["function"]["arguments"] += arguments or ""
        return fragments

    def state(self) -> list[dict]:
        return [self.choices[i].state() for i in sorted(self.choices)]

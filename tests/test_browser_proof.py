"""Proof in the browser of what is sent: every parameter set in the panel shows in the
inspector's body, nothing unset is sent, every seed example imports and runs, and the
View code snippets carry the body that was sent."""

from __future__ import annotations

import ast
import json
import re

import pytest
from playwright.sync_api import Page, expect

from playground.snippets import parse_request
from tests.fakes import FakeRelay
from tests.servers import manage
from tests.test_browser import answers, browser, choose, page, send, server, set_param  # noqa: F401
from tests.test_import import seed_examples

pytestmark = pytest.mark.browser

WEATHER = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "strict": True,
        "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    },
}
# Field label -> (what to type or pick, the value the body must hold).
EVERY_PARAMETER = {
    "temperature": ("0.4", 0.4),
    "top_p": ("0.8", 0.8),
    "max_tokens": ("40", 40),
    "n": ("2", 2),
    "presence_penalty": ("0.5", 0.5),
    "frequency_penalty": ("-0.5", -0.5),
    "seed": ("99", 99),
    "stop": ('["END", "STOP"]', ["END", "STOP"]),
    "repetition_penalty": ("1.1", 1.1),
    "top_k": ("20", 20),
    "min_p": ("0.1", 0.1),
    "top_logprobs": ("2", 2),
    "logprobs": ("true", True),
    "separate_reasoning": ("true", True),
    "enable_thinking": ("false", False),
    "user": ("tester-7", "tester-7"),
    "logit_bias": ('{"50256": -100}', {"50256": -100}),
    "tools": (json.dumps(WEATHER), WEATHER),
    "tool_choice": ('"none"', "none"),
    "response_format": (json.dumps(SCHEMA_FORMAT), SCHEMA_FORMAT),
}


def inspect_last(page: Page):  # noqa: F811
    expect(answers(page).last).to_contain_text(re.compile(r"completed|failed"))
    answers(page).last.get_by_role("button", name="Inspect").click()
    return page.get_by_role("dialog", name=re.compile(r"^Run \d+"))


def sent_body(dialog) -> dict:
    return json.loads(dialog.get_by_label("Request body").inner_text())


def test_every_parameter_set_in_the_panel_is_in_the_body_sent(page: Page):  # noqa: F811
    choose(page, "demo-echo")
    for label, (typed, _) in EVERY_PARAMETER.items():
        set_param(page, label, typed)
    page.get_by_label("stream_options.include_usage", exact=True).uncheck()
    set_param(page, "extra_body", '{"x_trace": "abc", "chat_template_kwargs": {"enable_thinking": false}}')
    send(page, "every knob")
    body = sent_body(inspect_last(page))
    for label, (_, value) in EVERY_PARAMETER.items():
        assert body[label] == value, label
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": False}
    assert body["x_trace"] == "abc"
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    wire = {"model", "messages", "stream", "stream_options", "x_trace", "chat_template_kwargs"}
    assert set(body) == set(EVERY_PARAMETER) | wire


def test_an_untouched_panel_sends_no_parameter(page: Page):  # noqa: F811
    choose(page, "demo-echo")
    send(page, "plain")
    body = sent_body(inspect_last(page))
    assert list(body) == ["model", "messages", "stream", "stream_options"]
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})


def code(dialog, language: str) -> str:
    dialog.get_by_label("Language").select_option(language)
    return dialog.get_by_label("Code snippet").inner_text()


def test_view_code_carries_the_body_sent_and_never_the_key(page: Page, server):  # noqa: F811
    choose(page, "demo-lorem", temperature="0.2", max_tokens="8", stop='["it\'s", "END"]')
    send(page, 'Say "hi" — it\'s fine')
    dialog = inspect_last(page)
    body = sent_body(dialog)
    dialog.get_by_role("tab", name="Code").click()
    base = f"{server.url}/demo/v1"
    snippets = {language: code(dialog, language) for language in ("curl", "python", "openai", "javascript")}
    for language, text in snippets.items():
        assert base in text, language
        assert "demo-lorem" in text, language
        assert "OPENAI_API_KEY" in text, language
        assert "demo-" not in text.replace("demo-lorem", "").replace("/demo/v1", ""), language
    assert parse_request(snippets["curl"])["body"] == body
    for language in ("python", "openai"):
        literal = re.search(r"^body = json\.loads\((.*)\)$", snippets[language], re.M).group(1)
        assert json.loads(ast.literal_eval(literal)) == body, language
    js = re.search(r"^const body = (\{.*?^\});$", snippets["javascript"], re.M | re.S).group(1)
    assert json.loads(js) == body


@pytest.fixture(scope="module")
def seeds_provider(server):  # noqa: F811
    """A provider on the page answering like the seed relays, for models they name."""
    with FakeRelay() as relay:
        env = {**server.env, "PLAYGROUND_PROVIDER_KEY": "sk-seed-relay-key-1111"}
        manage(env, "addprovider", "Seed relay", "--base-url", relay.base_url)
        yield relay


EXAMPLES = seed_examples()


@pytest.mark.parametrize(
    ("seed", "text"), EXAMPLES, ids=[f"{n[:3]}-{i}" for i, (n, _) in enumerate(EXAMPLES)]
)
def test_each_seed_example_imports_and_runs(page: Page, seeds_provider, seed, text):  # noqa: F811
    expected = parse_request(text)["body"]
    page.get_by_role("button", name="Import request").click()
    page.get_by_label("Request to import").fill(text)
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page).to_have_url(re.compile(r"/c/\d+/$"))
    expect(page.get_by_role("combobox", name="Model")).to_have_value(expected["model"])
    # Seed 002's example is a template ("<string>" placeholders): only the real values load.
    message = next((m["content"] for m in reversed(expected["messages"]) if m["role"] == "user"), None)
    if isinstance(message, str):
        expect(page.get_by_role("textbox", name="Message")).to_have_value(message)
    system = next((m["content"] for m in expected["messages"] if m["role"] == "system"), "")
    expect(page.get_by_role("textbox", name="System prompt")).to_have_value(system)
    for name in ("temperature", "max_tokens", "top_p"):
        if isinstance(expected.get(name), int | float):
            expect(page.get_by_label(name, exact=True)).to_have_value(re.compile(rf"^{expected[name]:g}$"))
    if "stream" in expected:
        checkbox = page.get_by_label("stream", exact=True)
        expect(checkbox).to_be_checked() if expected["stream"] else expect(checkbox).not_to_be_checked()

    page.get_by_role("combobox", name="Provider").select_option(label="Seed relay (sk-…1111)")
    page.get_by_role("combobox", name="Model").fill(expected["model"])
    page.get_by_role("button", name="Send").click()
    dialog = inspect_last(page)
    expect(answers(page).last).to_contain_text("completed")
    sent = sent_body(dialog)
    received = seeds_provider.requests[-1].body
    assert sent == received
    assert sent["model"] == expected["model"]
    for name, value in expected.items():
        if name not in ("model", "messages", "stream_options") and isinstance(value, int | float | bool):
            assert sent[name] == value, name

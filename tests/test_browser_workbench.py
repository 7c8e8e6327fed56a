"""The workbench in the browser: n choices, structured-output verdicts, logprobs, the tool loop,
editing turns by hand."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser import answers, browser, choose, conversation_id, last_run, page, send, server  # noqa: F401

pytestmark = pytest.mark.browser

WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def history(page: Page) -> list[dict]:  # noqa: F811
    return page.request.get(f"/api/conversations/{conversation_id(page)}/").json()["messages"]


def test_n_choices_side_by_side_and_pick_one(page: Page):  # noqa: F811
    choose(page, "demo-lorem", n="3", max_tokens="6", seed="7")
    send(page, "three ways")
    answer = answers(page).last
    for i in (1, 2, 3):
        expect(answer.get_by_text(re.compile(rf"^Choice {i} · length$"))).to_be_visible()
    expect(answer.get_by_role("status").first).to_contain_text("Cut off")
    answer.get_by_role("button", name="Use choice 3 to continue").click()
    expect(answer.get_by_role("button", name="Use choice 1 to continue")).to_be_visible()
    chosen = [m["choice_index"] for m in history(page) if m["role"] == "assistant" and m["in_history"]]
    assert chosen == [2]


def test_a_schema_answer_gets_a_verdict(page: Page):  # noqa: F811
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "strict": True, "schema": schema}}
    choose(page, "demo-echo", response_format=json.dumps(fmt))
    send(page, "where?")
    expect(answers(page).last.get_by_role("status")).to_have_text("✓ Schema: valid")


def test_logprobs_show_as_shaded_tokens_with_alternatives(page: Page):  # noqa: F811
    choose(page, "demo-echo", top_logprobs="3")
    page.get_by_label("logprobs", exact=True).select_option("true")
    send(page, "tides turn twice")
    answer = answers(page).last
    answer.get_by_role("button", name="Show the tokens of choice 1 with their probabilities").click()
    tokens = answer.get_by_label("Tokens of choice 1").locator(".token")
    expect(tokens.first).to_be_visible()
    assert "".join(tokens.all_inner_texts()).strip() == "tides turn twice"
    tokens.first.focus()
    tip = page.get_by_role("tooltip")
    expect(tip).to_be_visible()
    expect(tip.get_by_role("listitem")).to_have_count(3)


def test_a_tool_call_loop(page: Page):  # noqa: F811
    choose(page, "demo-echo", tools=json.dumps(WEATHER), tool_choice='"required"')
    send(page, "weather in Oslo?")
    result = page.get_by_label(re.compile(r"^Result of get_weather \("))
    expect(result).to_be_visible()
    result.fill('{"temperature": 21}')
    page.get_by_role("button", name="Submit tool results").click()
    expect(answers(page)).to_have_count(2)
    sent = last_run(page)["request_body"]["messages"]
    assert sent[-2]["role"] == "assistant"
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[-1] == {
        "role": "tool",
        "content": '{"temperature": 21}',
        "tool_call_id": sent[-2]["tool_calls"][0]["id"],
    }


def test_turns_are_added_edited_and_deleted_by_hand(page: Page):  # noqa: F811
    choose(page, "demo-echo")
    send(page, "first")
    expect(answers(page).last).to_contain_text("first")
    page.get_by_role("button", name="Add turn").click()
    page.get_by_label("Role").select_option("assistant")
    page.get_by_label("Turn content").fill("a reply written by hand")
    page.get_by_role("button", name="Add", exact=True).click()
    transcript = page.get_by_role("region", name="Conversation")
    expect(transcript).to_contain_text("a reply written by hand")
    page.get_by_role("button", name="Edit user turn 1").click()
    page.get_by_label("Edit turn").fill("first, edited")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(transcript).to_contain_text("first, edited")
    page.get_by_role("button", name="Delete assistant turn 3").click()
    expect(transcript).not_to_contain_text("a reply written by hand")
    roles = [(m["role"], m["content"]) for m in history(page)]
    assert roles == [("user", "first, edited"), ("assistant", "first")]


def test_a_shared_preset_is_saved_and_applied_in_one_choice(page: Page):  # noqa: F811
    choose(page, "demo-lorem", temperature="0.3", max_tokens="5", stop='["END"]', tools=json.dumps(WEATHER))
    page.get_by_label("logprobs", exact=True).select_option("true")
    page.get_by_role("textbox", name="System prompt").fill("Be brief.")
    page.get_by_role("button", name="Save preset").click()
    dialog = page.get_by_role("dialog", name="Save as preset")
    dialog.get_by_label("Preset name").fill("Brief lorem")
    dialog.get_by_label("Share with workspace").check()
    dialog.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").filter(has_text="Saved preset")).to_have_text(
        "Saved preset “Brief lorem”, shared with the workspace."
    )

    # Change everything, reload, then apply the preset by choosing it.
    page.get_by_role("combobox", name="Model").fill("demo-echo")
    page.get_by_label("temperature", exact=True).fill("1.5")
    page.get_by_label("tools", exact=True).fill("")
    page.get_by_role("textbox", name="System prompt").fill("")
    page.reload()
    page.get_by_role("combobox", name="Preset").select_option(label="Brief lorem")
    expect(page.get_by_role("status").filter(has_text="Applied")).to_have_text(
        "Applied preset “Brief lorem”."
    )
    expect(page.get_by_role("combobox", name="Model")).to_have_value("demo-lorem")
    expect(page.get_by_role("textbox", name="System prompt")).to_have_value("Be brief.")
    expect(page.get_by_label("temperature", exact=True)).to_have_value("0.3")
    expect(page.get_by_label("logprobs", exact=True)).to_have_value("true")
    assert json.loads(page.get_by_label("tools", exact=True).input_value()) == WEATHER

    send(page, "go")
    expect(answers(page).last).to_contain_text("completed")
    body = last_run(page)["request_body"]
    assert body["model"] == "demo-lorem"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (body["temperature"], body["max_tokens"], body["stop"], body["logprobs"]) == (
        0.3,
        5,
        ["END"],
        True,
    )
    assert body["tools"] == WEATHER

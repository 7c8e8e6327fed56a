"""What a person does on the page, in the system Chromium driven by Playwright.

One Daphne server (SQLite, or PostgreSQL + Redis when DATABASE_URL / REDIS_URL
say so) serves the whole module; every test gets a fresh browser context and
logs in through the login form. Elements are found by their accessible names.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from playground.tokens import count_tokens
from tests.servers import ADMIN_PASSWORD, AppServer, add_member, app_database

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
]
BOB_PASSWORD = "bob-password-for-tests"
WAIT = 20_000  # ms: the longest any expect() waits
# Slow enough to act mid-stream, short enough to finish: 80 tokens at 10 a second.
SLOW = {"max_tokens": "80", "extra_body": '{"tokens_per_second": 10}'}


@pytest.fixture(scope="module")
def server():
    with app_database() as env, AppServer(env) as server:
        add_member(env, "bob", BOB_PASSWORD, is_superuser=True, is_staff=True)
        yield server


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=WAIT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser: Browser, server: AppServer, user: str = "admin") -> Page:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(ADMIN_PASSWORD if user == "admin" else BOB_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    # The model list loads after the page: wait for its first model to be chosen.
    expect(page.get_by_role("combobox", name="Model")).to_have_value("demo-echo")
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server)
    yield page
    page.context.close()


def choose(page: Page, model: str, **params: str) -> None:
    """Pick the Demo provider and `model`, and fill parameter fields by their API names."""
    provider = page.get_by_role("combobox", name="Provider")
    demo = provider.get_by_role("option", name=re.compile(r"^Demo\b"))
    provider.select_option(demo.text_content())
    expect(page.get_by_role("combobox", name="Model")).to_have_value("demo-echo")
    page.get_by_role("combobox", name="Model").fill(model)
    for name, value in params.items():
        set_param(page, name, value)


def set_param(page: Page, name: str, value: str) -> None:
    """Fill (or, for true/false selects, pick) the parameter field labelled with its API name."""
    field = page.get_by_label(name, exact=True)
    if not field.is_visible():
        page.get_by_text("More parameters").click()
    if field.evaluate("e => e.tagName") == "SELECT":
        field.select_option(value)
    else:
        field.fill(value)


def send(page: Page, message: str) -> None:
    page.get_by_role("textbox", name="Message").fill(message)
    page.get_by_role("button", name="Send").click()


def answers(page: Page):
    return (
        page.get_by_role("region", name="Conversation")
        .get_by_role("article")
        .filter(has_text=re.compile(r"^assistant · "))
    )


def answer_text(answer) -> str:
    return " ".join(p.inner_text() for p in answer.get_by_role("paragraph").all())


def conversation_id(page: Page) -> int:
    expect(page).to_have_url(re.compile(r"/c/\d+/$"))
    return int(re.search(r"/c/(\d+)/$", page.url).group(1))


def last_run(page: Page) -> dict:
    """The newest run of the page's conversation, as the server stores it."""
    data = page.request.get(f"/api/conversations/{conversation_id(page)}/").json()
    return page.request.get(f"/api/runs/{data['runs'][-1]['id']}/").json()


def full_text(page: Page, run: dict) -> str:
    """What the Demo relay answers to the run's own request body, all at once."""
    body = {**run["request_body"], "stream": False}
    body.pop("stream_options", None)
    response = page.request.post(
        "/demo/v1/chat/completions", data=json.dumps(body),
        headers={"Authorization": "Bearer any", "Content-Type": "application/json"},
    )  # fmt: skip
    return response.json()["choices"][0]["message"]["content"]


def streamed_so_far(page: Page, words: int) -> str:
    """The newest answer's text once it shows at least `words` words, read while it streams."""
    answer = answers(page).last
    expect(answer.get_by_role("paragraph")).to_have_text(re.compile(rf"^\S+(\s+\S+){{{words - 1},}}"))
    text = answer_text(answer)
    # The status only moves on from streaming: still streaming now, so `text` is mid-stream.
    assert "streaming…" in answer.inner_text()
    return text


def test_it_streams_an_answer_with_usage_and_timing(page):
    choose(page, "demo-echo")
    send(page, "Hello there, playground!")
    answer = answers(page)
    expect(answer).to_contain_text("Hello there, playground!")
    # 5 tokens in the prompt, 5 in the echo: the Demo relay reports exact usage.
    expect(answer).to_contain_text("5 prompt + 5 completion = 10 tokens")
    expect(answer).not_to_contain_text("estimated")
    expect(answer).to_contain_text(re.compile(r"completed · first token \d+(\.\d+)? m?s"))
    expect(answer.get_by_role("paragraph")).to_have_text("Hello there, playground!")


def test_stop_keeps_the_partial_answer(page):
    choose(page, "demo-lorem", max_tokens="400", extra_body='{"tokens_per_second": 5}')
    send(page, "Write at length.")
    streamed_so_far(page, 3)
    page.get_by_role("button", name="Stop").click()
    answer = answers(page)
    expect(answer).to_contain_text("stopped · ")
    expect(answer).to_contain_text(re.compile(r"\d+ completion = \d+ tokens \(estimated\)"))
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    stopped = answer_text(answer)
    run = last_run(page)
    assert run["status"] == "stopped"
    assert run["choices"][0]["content"] == stopped
    assert 3 <= count_tokens(stopped) < 400
    assert full_text(page, run).startswith(stopped)
    page.wait_for_timeout(1000)  # five more words would have come by now
    assert answer_text(answer) == stopped


def test_send_is_disabled_with_the_reason_while_a_run_streams(page):
    """One run at a time per conversation (the server answers 409 otherwise): the page
    says why Send is off, as the button's description, and turns it back on at the end."""
    choose(page, "demo-lorem", max_tokens="400", extra_body='{"tokens_per_second": 5}')
    send(page, "Write at length.")
    streamed_so_far(page, 2)
    reason = "This conversation is still answering; stop it or wait."
    button = page.get_by_role("button", name="Send")
    expect(button).to_be_disabled()
    expect(button).to_have_accessible_description(reason)
    expect(page.get_by_role("status").filter(has_text=reason)).to_be_visible()
    page.get_by_role("textbox", name="Message").fill("And another thing")
    page.get_by_role("textbox", name="Message").press("Control+Enter")
    expect(page.get_by_role("alert").filter(has_text=reason)).to_be_visible()
    page.get_by_role("button", name="Stop").click()
    expect(answers(page)).to_contain_text("stopped · ")
    expect(button).to_be_enabled()
    expect(button).not_to_have_accessible_description(reason)


def test_reloading_mid_stream_resumes_without_losing_or_repeating_words(page):
    choose(page, "demo-lorem", seed="7", **SLOW)
    send(page, "Tell me a story.")
    before = streamed_so_far(page, 5)
    expected = full_text(page, last_run(page))
    assert expected.startswith(before)
    url = page.url

    page.reload()
    assert page.url == url
    # Still streaming after the reload, further along, and exactly the same words so far.
    after = streamed_so_far(page, count_tokens(before) + 3)
    assert expected.startswith(after)
    answer = answers(page)
    expect(answer).to_contain_text("completed · ")
    expect(answer.get_by_role("paragraph")).to_have_text(expected)
    assert count_tokens(expected) == 80


def test_a_teammate_watches_the_answer_stream_live(page, browser, server):
    choose(page, "demo-echo")
    send(page, "Hi")
    expect(answers(page)).to_contain_text("completed")
    bob = open_page(browser, server, "bob")
    try:
        bob.goto(f"/c/{conversation_id(page)}/")
        expect(bob.get_by_text("live", exact=True)).to_be_visible()
        expect(answers(bob)).to_have_count(1)

        choose(page, "demo-lorem", seed="3", **SLOW)
        send(page, "Go on.")
        watched = streamed_so_far(bob, 3)
        expected = full_text(page, last_run(page))
        assert expected.startswith(watched)
        expect(answers(bob).last).to_contain_text("asked by admin")
        expect(answers(bob).last).to_contain_text("completed · ")
        expect(answers(bob).last.get_by_role("paragraph")).to_have_text(expected)
        expect(answers(page).last.get_by_role("paragraph")).to_have_text(expected)
    finally:
        bob.context.close()


def test_model_output_is_sanitized(page):
    choose(page, "demo-echo")
    send(page, '<img src=x onerror="window.__xss=1"> [click](javascript:window.__xss=2) **bold**')
    answer = answers(page)
    expect(answer).to_contain_text("completed")
    expect(answer.get_by_text("bold", exact=True)).to_have_js_property("tagName", "STRONG")
    # No element of the answer keeps an event handler or a javascript: URL.
    unsafe = answer.evaluate(
        """(el) => [...el.querySelectorAll("*")].flatMap((node) => [...node.attributes])
            .filter((a) => a.name.startsWith("on") || /^\\s*javascript:/i.test(a.value))
            .map((a) => `${a.name}=${a.value}`)"""
    )
    assert unsafe == []
    answer.get_by_text("click", exact=True).click()
    assert page.evaluate("window.__xss") is None


def test_an_invalid_parameter_is_refused_before_sending(page, server):
    conversations = len(page.request.get("/api/conversations/").json()["conversations"])
    choose(page, "demo-echo", temperature="3")
    send(page, "Keep me.")
    temperature = page.get_by_role("spinbutton", name="temperature", exact=True)
    expect(page.get_by_role("alert").filter(has_text="temperature")).to_have_text(
        "Fix the highlighted parameters: temperature."
    )
    expect(temperature).to_have_attribute("aria-invalid", "true")
    expect(temperature).to_have_accessible_description("temperature must be between 0 and 2")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("Keep me.")
    expect(page.get_by_role("region", name="Conversation").get_by_role("article")).to_have_count(0)
    expect(page).to_have_url(server.url + "/")
    assert len(page.request.get("/api/conversations/").json()["conversations"]) == conversations


def test_ctrl_enter_sends(page):
    choose(page, "demo-echo")
    message = page.get_by_role("textbox", name="Message")
    message.fill("Sent from the keyboard")
    message.press("Control+Enter")
    expect(answers(page).get_by_role("paragraph")).to_have_text("Sent from the keyboard")
    expect(answers(page)).to_contain_text("completed")
    expect(message).to_have_value("")


def test_json_fields_show_their_whole_example(page):
    page.get_by_text("More parameters").click()
    extra_body = page.get_by_role("textbox", name="extra_body", exact=True)
    expect(extra_body).to_have_attribute("placeholder", '{"any_field": "a relay accepts"}')


def test_the_inspector_shows_what_was_sent_received_and_the_code(page: Page):
    choose(page, "demo-echo", temperature="0.3", seed="7")
    send(page, "inspect me")
    expect(answers(page).last).to_contain_text("completed")
    answers(page).last.get_by_role("button", name="Inspect").click()
    dialog = page.get_by_role("dialog", name=re.compile(r"^Run \d+"))
    sent = json.loads(dialog.get_by_label("Request body").inner_text())
    assert (sent["temperature"], sent["seed"], sent["model"]) == (0.3, 7, "demo-echo")
    assert sent["messages"][-1] == {"role": "user", "content": "inspect me"}
    expect(dialog.get_by_label("Request headers")).to_contain_text("Authorization: Bearer …")
    dialog.get_by_role("tab", name="Response").click()
    expect(dialog.get_by_text("HTTP 200")).to_be_visible()
    dialog.get_by_role("tab", name="Stream").click()
    expect(dialog.get_by_role("table", name="Raw stream")).to_contain_text("data: [DONE]")
    dialog.get_by_role("tab", name="Code").click()
    expect(dialog.get_by_label("Code snippet")).to_contain_text("$OPENAI_API_KEY")
    dialog.get_by_label("Language").select_option("openai")
    expect(dialog.get_by_label("Code snippet")).to_contain_text("from openai import OpenAI")


def test_a_seed_example_imports_into_the_fields(page: Page):
    body = {
        "model": "gpt-5-mini",
        "max_tokens": 1000,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "你好"},
        ],
        "temperature": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    page.get_by_role("button", name="Import request").click()
    page.get_by_label("Request to import").fill(json.dumps(body, ensure_ascii=False, indent=2))
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page).to_have_url(re.compile(r"/c/\d+/$"))
    expect(page.get_by_role("combobox", name="Model")).to_have_value("gpt-5-mini")
    expect(page.get_by_role("textbox", name="System prompt")).to_have_value("You are a helpful assistant.")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("你好")
    expect(page.get_by_label("temperature", exact=True)).to_have_value("1")
    expect(page.get_by_label("max_tokens", exact=True)).to_have_value("1000")
    expect(page.get_by_label("stream", exact=True)).to_be_checked()


def test_the_system_prompt_of_a_new_conversation_is_sent(page: Page):
    choose(page, "demo-echo")
    page.get_by_role("textbox", name="System prompt").fill("Answer in French.")
    send(page, "bonjour")
    expect(answers(page).last).to_contain_text("completed")
    assert last_run(page)["request_body"]["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "bonjour"},
    ]
    expect(page.get_by_role("textbox", name="System prompt")).to_have_value("Answer in French.")

"""The Compare page: 2–4 columns streaming side by side, a word diff, and Run × N."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from playwright.sync_api import Locator, Page, expect

from playground import keys
from playground.models import Membership
from tests.conftest import CANARY_KEY
from tests.servers import AppServer, app_database, manage
from tests.test_browser import browser, open_page, server  # noqa: F401 - fixtures

# ---------------------------------------------------------------------------- the page


def page_config(response) -> dict:
    html = response.content.decode()
    match = re.search(r'<script id="compare-config" type="application/json">(.*?)</script>', html, re.S)
    assert match, "the page carries its config"
    return json.loads(match.group(1))


def test_compare_needs_a_login(db):
    response = Client().get("/compare/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/compare/"


def test_compare_renders_for_a_member_without_any_key(bob, provider):
    client = Client()
    client.force_login(bob)
    response = client.get("/compare/")
    assert response.status_code == 200
    html = response.content.decode()
    for control in (
        '<label for="system">System prompt</label>',
        '<label for="message">Message</label>',
        '<label for="columns">Columns</label>',
        '<label for="sync">Sync parameters</label>',
        '<label for="repeat">Run × N</label>',
        '<button type="submit" id="run">Compare</button>',
        'role="region" aria-label="Column 1"',
        'role="region" aria-label="Column 4"',
        '<label for="c2-provider">Provider</label>',
        '<label for="c2-model">Model</label>',
        '<label for="c3-temperature">temperature</label>',
        '<label for="c3-seed">seed</label>',
        '<label for="c4-extra_body">extra body</label>',
        'role="region" aria-label="Diff"',
        '<label for="diff-a">Diff A</label>',
        '<label for="diff-b">Diff B</label>',
        'title="no price set for this provider and model"',
        '<a href="/compare/" aria-current="page">Compare</a>',
    ):
        assert control in html, control
    config = page_config(response)
    assert [p["name"] for p in config["providers"]] == ["Demo", "Fake"]
    assert config["canRun"] is True
    assert config["parameters"]["temperature"] == {"kind": "number", "min": 0, "max": 2}
    # The key never reaches the page: only its mask.
    assert CANARY_KEY not in html
    assert CANARY_KEY[3:-4] not in html
    assert config["providers"][1]["key_hint"] == keys.mask(CANARY_KEY)


def test_the_main_page_links_to_compare(bob):
    client = Client()
    client.force_login(bob)
    assert '<a href="/compare/">Compare</a>' in client.get("/").content.decode()


def test_compare_shows_nothing_of_a_workspace_one_is_not_in(charlie, provider, workspace):
    client = Client()
    client.force_login(charlie)
    response = client.get(f"/compare/?workspace={workspace.id}")
    assert response.status_code == 200
    config = page_config(response)
    assert config["workspace"] != workspace.id
    assert config["providers"] == []
    html = response.content.decode()
    assert "Acme" not in html
    assert "Fake" not in html
    assert provider.key_hint not in html


def test_viewers_see_compare_but_cannot_run(bob, workspace):
    Membership.objects.filter(user=bob).update(role=Membership.Role.VIEWER)
    client = Client()
    client.force_login(bob)
    response = client.get("/compare/")
    assert response.status_code == 200
    assert page_config(response)["canRun"] is False
    # The policy's reason (access.POLICY), beside the disabled Compare button.
    assert "Viewers can read and fork conversations but not start or run them." in response.content.decode()


def test_issue15_3_a_user_in_no_workspace_sees_a_page_that_says_so(workspace):
    user = User.objects.create_user("dora", password="dora-password")
    client = Client()
    client.force_login(user)
    for path in ("/", "/compare/"):
        response = client.get(path)
        assert response.status_code == 200
        assert "You are not in any workspace yet" in response.content.decode()
    assert client.get("/api/conversations/").status_code == 404


# ---------------------------------------------------------------------------- in the browser


@pytest.fixture
def compare_page(browser, server):  # noqa: F811 - fixtures imported above
    page = open_page(browser, server)
    page.goto("/compare/")
    yield page
    page.context.close()


def column(page: Page, k: int) -> Locator:
    return page.get_by_role("region", name=f"Column {k}", exact=True)


def status(page: Page, k: int) -> Locator:
    return column(page, k).locator("[data-metric=status]")


def answer(page: Page, k: int) -> Locator:
    return column(page, k).get_by_role("group", name="Answer")


def set_up(page: Page, k: int, model: str, **params: str) -> None:
    """Pick the Demo provider and `model` in column k, and fill its parameter fields."""
    col = column(page, k)
    provider = col.get_by_role("combobox", name="Provider")
    provider.select_option(label="Demo")
    expect(col.get_by_role("combobox", name="Model")).to_have_value("demo-echo")
    col.get_by_role("combobox", name="Model").fill(model)
    for name, value in params.items():
        label = "extra body" if name == "extra_body" else name
        col.get_by_label(label, exact=True).fill(value)


def listed_conversations(page: Page) -> list[tuple[int, str]]:
    """(id, title) of every conversation in the list, a comparison's columns one by one."""
    out = []
    for entry in page.request.get("/api/conversations/").json()["conversations"]:
        if entry.get("kind") == "comparison":
            out += list(zip(entry["columns"], entry["column_titles"], strict=True))
        else:
            out.append((entry["id"], entry["title"]))
    return out


def conversation_ids(page: Page) -> set[int]:
    return {conv_id for conv_id, _ in listed_conversations(page)}


def stored_answers(page: Page, before: set[int]) -> dict[str, str]:
    """The answers of the conversations not in `before`, as the server stored them, by title."""
    out = {}
    for conv_id, title in listed_conversations(page):
        if conv_id not in before:
            run = page.request.get(f"/api/conversations/{conv_id}/").json()["runs"][-1]
            out[title] = run["choices"][0]["content"] if run["choices"] else ""
    return out


SLOW = '{"tokens_per_second": 12}'


@pytest.mark.browser
def test_two_columns_stream_at_once_then_diff(compare_page: Page, server):  # noqa: F811
    page = compare_page
    # USD per 1M tokens, large enough to show in four decimals.
    prices = {"demo-lorem": {"input": 1000, "output": 2000}}
    code = "from playground.models import Provider as P; P.objects.filter(is_demo=True).update(prices=%r)"
    manage(server.env, "shell", "-c", code % prices)
    page.get_by_role("combobox", name="Columns").select_option("2")
    set_up(page, 1, "demo-lorem", seed="1", max_tokens="50", extra_body=SLOW)
    set_up(page, 2, "demo-lorem", seed="2", max_tokens="50", extra_body=SLOW)
    page.get_by_role("textbox", name="Message").fill("Tell me a story.")
    before = conversation_ids(page)
    page.get_by_role("button", name="Compare", exact=True).click()

    # Both columns are mid-stream at the same moment: partial text, streaming, stoppable.
    for k in (1, 2):
        expect(answer(page, k)).to_have_text(re.compile(r"^\s*\S+(\s+\S+){2,}"))
    now = page.evaluate(
        """() => [1, 2].map((k) => {
            const c = document.getElementById(`column-${k}`);
            return {
                status: c.querySelector("[data-metric=status]").textContent,
                words: c.querySelector("[data-role=answer]").innerText.trim().split(/\\s+/).length,
                stoppable: !c.querySelector("[data-role=stop]").disabled,
            };
        })"""
    )
    for k, col in enumerate(now, start=1):
        assert col["status"] == "streaming…", (k, now)
        assert 3 <= col["words"] < 50, (k, now)
        assert col["stoppable"], (k, now)
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_enabled()

    # Both finish, with exact usage (the Demo relay reports it) and timing.
    for k in (1, 2):
        expect(status(page, k)).to_have_text("completed")
        col = column(page, k)
        expect(col.locator("[data-metric=usage]")).to_have_text(
            re.compile(r"^\d+ prompt \+ 50 completion = \d+ tokens$")
        )
        expect(col.locator("[data-metric=ttft]")).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
        expect(col.locator("[data-metric=total]")).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
        expect(col.locator("[data-metric=tps]")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
        prompt = int(col.locator("[data-metric=usage]").inner_text().split()[0])
        cost = (prompt * 1000 + 50 * 2000) / 1_000_000
        expect(col.locator("[data-metric=cost]")).to_have_text(f"${cost:.4f}")
        expect(col.locator("[data-metric=cost]")).to_have_attribute("title", "from the provider's prices")
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_disabled()

    # Each column shows exactly what the server stored: no word lost or repeated.
    stored = stored_answers(page, before)
    assert set(stored) == {"Compare: demo-lorem #1", "Compare: demo-lorem #2"}
    for k in (1, 2):
        shown = answer(page, k).inner_text().split()
        assert shown == stored[f"Compare: demo-lorem #{k}"].split()
    assert stored["Compare: demo-lorem #1"] != stored["Compare: demo-lorem #2"]

    # Different seeds, different words: the Diff shows insertions and deletions.
    diff = page.get_by_role("region", name="Diff")
    expect(diff.get_by_role("combobox", name="Diff A")).to_have_value("1")
    expect(diff.get_by_role("combobox", name="Diff B")).to_have_value("2")
    output = diff.get_by_role("group", name="Word diff")
    expect(output.locator("ins").first).to_be_visible()
    expect(output.locator("del").first).to_be_visible()
    expect(diff).to_contain_text(
        re.compile(r"Column 1 → Column 2: [1-9]\d* words inserted, [1-9]\d* deleted\.")
    )
    # Every word of B is in the diff, once: kept or inserted (markers are for screen readers).
    kept_or_added = output.evaluate(
        """(el) => { const c = el.cloneNode(true); c.querySelectorAll("del, .visually-hidden")
            .forEach((n) => n.remove()); return c.textContent; }"""
    )
    assert kept_or_added.split() == stored["Compare: demo-lorem #2"].split()
    # The same column on both sides: nothing to compare.
    diff.get_by_role("combobox", name="Diff B").select_option("1")
    expect(diff).to_contain_text("Choose two different columns.")


@pytest.mark.browser
def test_run_times_n_with_one_seed_gives_identical_answers(compare_page: Page):
    page = compare_page
    set_up(page, 1, "demo-lorem", seed="7", max_tokens="20", extra_body='{"tokens_per_second": 40}')
    page.get_by_role("spinbutton", name="Run × N").fill("3")
    # Column 1's setup, three times: the followers show it and cannot change it.
    expect(column(page, 3)).to_be_visible()
    expect(column(page, 4)).to_be_hidden()
    expect(column(page, 3).get_by_role("combobox", name="Model")).to_have_value("demo-lorem")
    expect(column(page, 3).get_by_role("combobox", name="Model")).to_be_disabled()
    expect(column(page, 2).get_by_label("seed", exact=True)).to_have_value("7")
    page.get_by_role("textbox", name="Message").fill("Again, please.")
    before = conversation_ids(page)
    page.get_by_role("button", name="Compare", exact=True).click()
    for k in (1, 2, 3):
        expect(status(page, k)).to_have_text("completed")
    expect(page.get_by_role("region", name="Diff")).to_contain_text("3 of 3 answers identical.")
    expect(page.get_by_role("region", name="Diff")).to_contain_text("answered identically")
    expect(page.get_by_role("region", name="Diff").locator("ins, del")).to_have_count(0)
    texts = [answer(page, k).inner_text() for k in (1, 2, 3)]
    assert texts[0]
    assert texts[0] == texts[1] == texts[2]
    stored = stored_answers(page, before)
    assert set(stored) == {f"Compare: demo-lorem #{k}" for k in (1, 2, 3)}
    assert all(text.split() == texts[0].split() for text in stored.values())

    # Column 2 with another seed: the summary says which differ.
    page.get_by_role("spinbutton", name="Run × N").fill("1")
    page.get_by_role("combobox", name="Columns").select_option("3")
    expect(column(page, 2).get_by_label("seed", exact=True)).to_be_enabled()
    column(page, 2).get_by_label("seed", exact=True).fill("8")
    expect(page.get_by_role("button", name="Compare", exact=True)).to_be_enabled()
    page.get_by_role("button", name="Compare", exact=True).click()
    for k in (1, 2, 3):
        expect(status(page, k)).to_have_text("completed")
    # Not a Run × N: no summary, but the diff of Column 1 and Column 2 shows changes.
    expect(page.locator("#repeat-summary")).to_be_hidden()
    expect(page.get_by_role("region", name="Diff").locator("ins").first).to_be_visible()


@pytest.mark.browser
def test_an_invalid_parameter_is_refused_before_sending(compare_page: Page):
    page = compare_page
    before = conversation_ids(page)
    set_up(page, 1, "demo-echo")
    set_up(page, 2, "demo-echo", temperature="3", extra_body='{"model": "x"}')
    page.get_by_role("textbox", name="Message").fill("Keep me.")
    page.get_by_role("button", name="Compare", exact=True).click()
    temperature = column(page, 2).get_by_role("spinbutton", name="temperature", exact=True)
    expect(temperature).to_have_attribute("aria-invalid", "true")
    expect(temperature).to_have_accessible_description("temperature must be between 0 and 2")
    extra = column(page, 2).get_by_role("textbox", name="extra body")
    expect(extra).to_have_accessible_description("extra body cannot set model")
    expect(page.get_by_role("alert").filter(has_text="Not sent.")).to_have_text(
        "Not sent. Column 2: temperature must be between 0 and 2; extra body cannot set model."
    )
    expect(status(page, 1)).to_have_text("idle")
    assert conversation_ids(page) == before

    # With Sync parameters, Column 2 sends Column 1's (valid) parameters instead.
    page.get_by_role("checkbox", name="Sync parameters").check()
    expect(temperature).to_be_disabled()
    expect(temperature).to_have_value("")
    page.get_by_role("button", name="Compare", exact=True).click()
    for k in (1, 2):
        expect(answer(page, k)).to_have_text("Keep me.")
        expect(status(page, k)).to_have_text("completed")
    expect(page.get_by_role("region", name="Diff")).to_contain_text("answered identically")

    # Sync off: Column 2 gets its own values back.
    page.get_by_role("checkbox", name="Sync parameters").uncheck()
    expect(temperature).to_be_enabled()
    expect(temperature).to_have_value("3")
    expect(extra).to_have_value('{"model": "x"}')


@pytest.mark.browser
def test_a_refused_run_shows_in_its_column(compare_page: Page):
    """The server validates again: what the browser cannot know (a model the relay
    refuses) comes back as a failed run, in plain words, in that column only."""
    page = compare_page
    set_up(page, 1, "demo-echo")
    set_up(page, 2, "no-such-model")
    page.get_by_role("textbox", name="Message").fill("Hello")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(status(page, 1)).to_have_text("completed")
    expect(status(page, 2)).to_have_text("failed")
    expect(column(page, 2).get_by_role("alert")).to_contain_text(re.compile(r"The run failed: .+"))
    expect(column(page, 1).get_by_role("alert")).to_have_count(0)


@pytest.mark.browser
def test_a_dropped_websocket_resumes_without_losing_or_repeating_words(compare_page: Page):
    page = compare_page
    page.add_init_script(
        """window.__sockets = [];
        const Native = window.WebSocket;
        window.WebSocket = class extends Native {
            constructor(...args) { super(...args); window.__sockets.push(this); }
        };"""
    )
    page.reload()
    set_up(page, 1, "demo-lorem", seed="3", max_tokens="60", extra_body=SLOW)
    set_up(page, 2, "demo-lorem", seed="4", max_tokens="60", extra_body=SLOW)
    page.get_by_role("textbox", name="Message").fill("Go on.")
    before = conversation_ids(page)
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(answer(page, 1)).to_have_text(re.compile(r"^\s*\S+(\s+\S+){4,}"))
    # Drop Column 1's socket mid-stream: it reconnects, takes a snapshot and goes on.
    dropped = page.evaluate(
        """() => { const s = window.__sockets.find((s) => s.url.includes(`/ws/conversations/`));
            s.close(); return window.__sockets.length; }"""
    )
    assert status(page, 1).text_content() == "streaming…"
    page.wait_for_function(f"window.__sockets.length > {dropped}")
    for k in (1, 2):
        expect(status(page, k)).to_have_text("completed")
    stored = stored_answers(page, before)
    assert set(stored) == {"Compare: demo-lorem #1", "Compare: demo-lorem #2"}
    for k in (1, 2):
        assert answer(page, k).inner_text().split() == stored[f"Compare: demo-lorem #{k}"].split()


@pytest.fixture(scope="module")
def busy_server():
    """A server that streams one answer at a time: a second column is refused with 503."""
    with app_database(PLAYGROUND_MAX_STREAMS="1") as env, AppServer(env) as app:
        yield app


@pytest.mark.browser
def test_a_busy_relay_refuses_one_column_in_plain_words(browser, busy_server):  # noqa: F811
    page = open_page(browser, busy_server)
    try:
        page.goto("/compare/")
        set_up(page, 1, "demo-lorem", max_tokens="30", extra_body=SLOW)
        set_up(page, 2, "demo-lorem", max_tokens="30", extra_body=SLOW)
        page.get_by_role("textbox", name="Message").fill("Both, please.")
        page.get_by_role("button", name="Compare", exact=True).click()
        # Submitted at once: one column gets the only slot, the other is refused.
        refused = page.locator(".column", has_text="busy, not sent")
        expect(refused).to_have_count(1)
        expect(refused.get_by_role("alert")).to_have_text(
            "Not sent: the relay is busy. "
            "The playground is busy: too many answers are streaming. Try again in a moment."
        )
        expect(page.locator(".column", has_text="completed")).to_have_count(1)
        expect(page.get_by_role("region", name="Diff")).to_contain_text(
            re.compile(r"Column \d has no answer to compare\.")
        )
    finally:
        page.context.close()

"""Probe a provider from the page, see the panel mark what it ignores or rejects, and see
in the inspector what was set but not sent; reasoning with its own timing, sent back on request."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.fakes import FakeRelay
from tests.servers import manage
from tests.test_browser import answers, browser, last_run, page, send, server, set_param  # noqa: F401
from tests.test_capabilities import picky

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def picky_provider(server):  # noqa: F811
    """A provider on the page whose relay honours stop, ignores n, rejects top_k and
    puts reasoning in a `reasoning` field when enable_thinking asks."""
    with FakeRelay() as relay:
        picky(relay)
        env = {**server.env, "PLAYGROUND_PROVIDER_KEY": "sk-picky-key-0000"}
        manage(env, "addprovider", "Picky", "--base-url", relay.base_url, "--workspace", "default")
        yield relay


def test_probe_marks_the_panel_and_the_inspector_lists_what_was_not_sent(page: Page, picky_provider):  # noqa: F811
    page.get_by_role("combobox", name="Provider").select_option(label="Picky (sk-…0000)")
    page.get_by_role("combobox", name="Model").fill("fake-model")
    expect(page.get_by_text("Not probed")).to_be_visible()
    page.get_by_role("button", name="Probe").click()
    dialog = page.get_by_role("dialog", name="Probe Picky")
    expect(dialog.get_by_label("Model to probe with")).to_have_value("fake-model")
    dialog.get_by_role("button", name="Run probe").click()
    expect(dialog.get_by_role("status")).to_contain_text("Done:", timeout=90_000)
    results = dialog.get_by_role("table", name="Probe results")
    expect(results.get_by_role("row").filter(has_text=re.compile(r"^top_k\s*rejected"))).to_have_count(1)
    expect(results.get_by_role("row").filter(has_text=re.compile(r"^stop\s*honoured"))).to_have_count(1)
    # The admin chooses to leave out what the relay rejects.
    dialog.get_by_label("Leave out parameters this provider rejects").check()
    expect(page.locator("#param-top_k-cap")).to_have_text(re.compile(r"^rejected · left out"))
    dialog.get_by_role("button", name="Close").click()

    expect(page.get_by_label("n", exact=True)).to_have_accessible_description(
        re.compile(r"^ignored\s*: answered, but did not give 2 choices")
    )
    expect(page.get_by_label("temperature", exact=True)).not_to_have_accessible_description(re.compile("."))
    expect(
        page.get_by_text(re.compile(r"Probed \d{4}-\d\d-\d\d with fake-model · reasoning in reasoning"))
    ).to_be_visible()

    set_param(page, "n", "2")
    set_param(page, "top_k", "40")
    set_param(page, "enable_thinking", "true")
    send(page, "alpha beta")
    answer = answers(page).last
    expect(answer).to_contain_text("completed")
    assert "top_k" not in picky_provider.requests[-1].body
    assert picky_provider.requests[-1].body["n"] == 2
    # Reasoning shows in its own section, with its own time.
    expect(answer.get_by_text(re.compile(r"^Reasoning · \d+ ms$"))).to_be_visible()

    answer.get_by_role("button", name="Inspect").click()
    notes = page.get_by_role("dialog").get_by_label("Parameter notes")
    expect(notes.get_by_role("list", name="Set but not sent")).to_contain_text("top_k: left out")
    expect(notes.get_by_role("list", name="Sent but ignored or rejected")).to_contain_text(
        "n: this provider ignored"
    )
    page.get_by_role("button", name="Close").click()

    # Reasoning goes back only when asked, in the field the probe found.
    assert all("reasoning" not in m for m in last_run(page)["request_body"]["messages"])
    set_param(page, "n", "")
    page.get_by_label("Send reasoning back in later turns").check()
    send(page, "gamma")
    expect(answers(page)).to_have_count(2)
    expect(answers(page).last).to_contain_text("completed")
    sent = json.loads(json.dumps(picky_provider.requests[-1].body))
    assistant = [m for m in sent["messages"] if m["role"] == "assistant"]
    assert assistant == [
        {"role": "assistant", "content": assistant[0]["content"], "reasoning": "Let me think."}
    ]

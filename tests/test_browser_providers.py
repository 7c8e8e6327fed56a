"""The providers page in Chromium: an owner adds the team's relay (its key write-only,
shown masked), tests the connection and reads the result in words, sets prices in the
table; a member sees the provider in the list and in the playground's picker, and no
page or response they receive holds the key."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from tests.fakes import FakeRelay
from tests.servers import add_member
from tests.test_browser import BOB_PASSWORD, browser, open_page, server  # noqa: F401

pytestmark = pytest.mark.browser

TEAM_KEY = "sk-team-relay-4b8c1d2e3f405162"
MASK = "sk-…5162"


@pytest.fixture(scope="module")
def relay():
    with FakeRelay() as relay:
        yield relay


@pytest.fixture(scope="module")
def member(server):  # noqa: F811
    add_member(server.env, "mia", BOB_PASSWORD, role="member")
    return "mia"


def provider_row(page: Page, name: str):
    return page.get_by_role("table", name="Providers").get_by_role("row", name=name)


def secrets_in(text: str) -> list[str]:
    return [s for s in (TEAM_KEY, TEAM_KEY[3:], TEAM_KEY[-12:]) if s in text]


def test_an_owner_adds_a_provider_and_a_member_uses_it_without_ever_receiving_the_key(
    browser,  # noqa: F811
    server,  # noqa: F811
    relay,
    member,
):
    page = open_page(browser, server)
    page.get_by_role("link", name="Providers").click()
    expect(page.get_by_role("heading", name="Providers")).to_be_visible()

    page.get_by_role("button", name="Add provider").click()
    dialog = page.get_by_role("dialog", name="Add provider")
    dialog.get_by_role("textbox", name="Name").fill("Team relay")
    dialog.get_by_role("textbox", name="Base URL").fill(relay.base_url)
    key_field = dialog.get_by_label("API key")
    expect(key_field).to_have_attribute("type", "password")
    key_field.fill(TEAM_KEY)
    dialog.get_by_role("button", name="Add header").click()
    dialog.get_by_role("textbox", name="Header name 1").fill("X-Team")
    dialog.get_by_role("textbox", name="Header value 1").fill("blue")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()

    row = provider_row(page, "Team relay")
    expect(row.get_by_role("cell", name=MASK)).to_be_visible()
    expect(row.get_by_role("cell", name="fake-large, fake-model")).to_be_visible()
    row.get_by_role("button", name="Test connection").click()
    expect(row.get_by_role("status")).to_have_text("Connected: 2 models (fake-large, fake-model)")
    assert relay.requests[-1].headers["Authorization"] == f"Bearer {TEAM_KEY}"
    assert relay.requests[-1].headers["X-Team"] == "blue"

    # Probe, through the playground's probe endpoint.
    row.get_by_role("button", name="Probe").click()
    probe = page.get_by_role("dialog", name="Probe Team relay")
    probe.get_by_role("textbox", name="Model to probe with").fill("fake-model")
    probe.get_by_role("button", name="Run probe").click()
    expect(probe.get_by_role("status")).to_contain_text("Done:", timeout=90_000)
    probe.get_by_role("button", name="Close").click()

    # Edit: the key field comes back empty, prices go in the table; a bad row is refused.
    row.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name="Edit Team relay")
    expect(dialog.get_by_label("API key")).to_have_value("")
    expect(dialog.get_by_text(f"Stored key: {MASK}.")).to_be_visible()
    expect(dialog.get_by_role("textbox", name="Header value 1")).to_have_value("blue")
    dialog.get_by_role("button", name="Add price").click()
    dialog.get_by_role("textbox", name="Model 1").fill("fake-model")
    dialog.get_by_role("spinbutton", name="Input $/1M 1", exact=True).fill("2.5")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("alert")).to_contain_text("Not saved.")
    expect(dialog.get_by_text("fake-model: input and output prices are both needed.")).to_be_visible()
    dialog.get_by_role("spinbutton", name="Output $/1M 1", exact=True).fill("10")
    dialog.get_by_role("spinbutton", name="Cached input $/1M 1", exact=True).fill("1.25")
    dialog.get_by_role("button", name="Add price").click()
    dialog.get_by_role("textbox", name="Model 2").fill("*")
    dialog.get_by_role("spinbutton", name="Input $/1M 2", exact=True).fill("1")
    dialog.get_by_role("spinbutton", name="Output $/1M 2", exact=True).fill("2")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status").first).to_have_text("Team relay saved.")
    listed = page.request.get("/api/providers/").json()["providers"]
    team = next(p for p in listed if p["name"] == "Team relay")
    assert team["prices"] == {
        "fake-model": {"input": 2.5, "output": 10, "cached_input": 1.25},
        "*": {"input": 1, "output": 2},
    }
    assert team["key_hint"] == MASK
    # The server refuses what the page would not send, naming the field.
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    refused = page.request.patch(
        f"/api/providers/{team['id']}/",
        data=json.dumps({"prices": {"x": {"input": -1, "output": 1}}}),
        headers={"Content-Type": "application/json", "X-CSRFToken": csrf},
    )
    assert refused.status == 400
    assert "prices" in refused.json()["fields"]
    assert secrets_in(page.content()) == []
    page.context.close()

    # A member: the list and the picker show the provider, never its key.
    received: list[str] = []
    context = browser.new_context(base_url=server.url)
    mia = context.new_page()

    def keep(response) -> None:
        try:
            received.append(
                response.url + json.dumps(response.headers) + response.body().decode("utf-8", "replace")
            )
        except Exception:  # a redirect has no body
            received.append(response.url + json.dumps(response.headers))

    mia.on("response", keep)
    mia.goto("/accounts/login/")
    mia.get_by_label("Username").fill(member)
    mia.get_by_label("Password").fill(BOB_PASSWORD)
    mia.get_by_role("button", name="Log in").click()
    picker = mia.get_by_role("combobox", name="Provider")
    expect(picker.get_by_role("option", name=f"Team relay ({MASK})")).to_have_count(1)
    pages = [mia.content()]
    mia.get_by_role("link", name="Providers").click()
    row = provider_row(mia, "Team relay")
    expect(row.get_by_role("cell", name=MASK)).to_be_visible()
    expect(row.get_by_role("cell", name=relay.base_url)).to_be_visible()
    expect(row.get_by_role("cell", name="fake-large, fake-model")).to_be_visible()
    expect(mia.get_by_text("Only owners and admins manage providers.")).to_be_visible()
    expect(mia.get_by_role("button", name="Add provider")).to_have_count(0)
    expect(row.get_by_role("button")).to_have_count(0)
    pages.append(mia.content())
    context.close()
    assert any("/api/providers/" in r for r in received)
    for text in pages + received:
        assert secrets_in(text) == [], text[:200]
        assert "blue" not in text or "X-Team" not in text  # headers stay with the managers

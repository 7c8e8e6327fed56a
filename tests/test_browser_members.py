"""Issue 17 in the browser: the owner invites a viewer by link, the viewer signs up and
joins, the owner changes their role and removes them, and the viewer's open page is told
at once that it lost access. Two browser contexts; controls found by role and name."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.servers import AppServer, app_database
from tests.test_browser import browser, conversation_id, open_page, send  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server():
    with app_database() as env, AppServer(env) as server:
        yield server


def member_row(page, username):
    return page.get_by_role("table", name="Members").get_by_role("row").filter(has_text=username)


def test_invite_sign_up_join_change_role_and_remove(browser, server):  # noqa: F811
    owner = open_page(browser, server)
    send(owner, "Hello team")
    conversation = conversation_id(owner)

    owner.get_by_role("link", name="Members").click()
    expect(owner.get_by_role("table", name="Members")).to_contain_text("admin")
    owner.get_by_role("combobox", name="Role").select_option("viewer")
    owner.get_by_role("button", name="Create invite link").click()
    link = owner.get_by_role("textbox", name="Invite link")
    expect(link).to_have_attribute("readonly", "")
    url = link.input_value()
    assert "/invite/" in url

    guest_context = browser.new_context(base_url=server.url)
    guest = guest_context.new_page()
    guest.goto(url)
    expect(guest.get_by_role("link", name="Log in instead")).to_be_visible()
    guest.get_by_role("textbox", name="Username").fill("vera")
    guest.get_by_role("textbox", name="Password", exact=True).fill("Zq8!vera-signup")
    guest.get_by_role("textbox", name="Password confirmation").fill("Zq8!vera-signup")
    guest.get_by_role("button", name="Join").click()
    expect(guest.get_by_role("status").filter(has_text="you joined as viewer")).to_be_visible()
    expect(guest.get_by_role("link", name="Members")).to_be_visible()

    owner.reload()
    expect(member_row(owner, "vera").get_by_role("cell", name="viewer", exact=True)).to_be_visible()
    invites = owner.get_by_role("table", name="Invite links")
    expect(invites).to_contain_text("used up")

    member_row(owner, "vera").get_by_role("combobox").select_option("member")
    owner.get_by_role("button", name="Change role of vera").click()
    expect(member_row(owner, "vera").get_by_role("cell", name="member", exact=True)).to_be_visible()

    guest.goto(f"/c/{conversation}/")
    expect(guest.locator("#connection")).to_have_text(re.compile("live"))
    owner.get_by_role("button", name="Remove vera").click()
    expect(owner.get_by_role("table", name="Members")).not_to_contain_text("vera")
    expect(guest.locator("#connection")).to_have_text("no access")
    guest_context.close()
    owner.context.close()

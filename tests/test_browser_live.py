"""The live workspace in the browser: two teammates on the same workspace's main page.

admin creates a shared conversation and starts a Demo run: bob's list shows it without a
reload, with who did it, running and then done. bob opens it: admin sees bob under
"Also here"; bob leaves: admin sees him go.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser import SLOW, browser, choose, conversation_id, open_page, send, server  # noqa: F401

pytestmark = pytest.mark.browser


def entry(page: Page, conversation: int):
    """The list item of a conversation in the sidebar's list."""
    sidebar = page.get_by_role("complementary", name="Conversations")
    return sidebar.get_by_role("listitem").filter(has=page.locator(f'a[data-id="{conversation}"]'))


def test_a_teammates_conversation_and_run_appear_live_and_presence_shows_who_is_here(browser, server):  # noqa: F811
    alice = open_page(browser, server)  # admin
    bob = open_page(browser, server, "bob")
    try:
        choose(alice, "demo-lorem", seed="5", **SLOW)
        send(alice, "Plan the offsite")
        conv = conversation_id(alice)

        # bob's list shows it without a reload, says who made it, and marks it running.
        item = entry(bob, conv)
        expect(item).to_contain_text("Plan the offsite")
        expect(bob.get_by_role("status", name="Workspace activity")).to_have_text(
            re.compile(r"^admin (created a conversation|started a run)$")
        )
        expect(item).to_contain_text("running…")
        expect(bob.get_by_role("status", name="Workspace activity")).to_have_text("admin finished a run")
        expect(item).not_to_contain_text("running…")
        assert bob.url.endswith("/")  # never reloaded onto another page

        # bob opens it: admin sees him; bob leaves for a new conversation: he is gone.
        viewers = alice.get_by_role("status", name="Viewers")
        expect(viewers).to_be_hidden()
        item.get_by_role("link").click()
        expect(viewers).to_have_text("Also here: bob")
        expect(bob.get_by_role("status", name="Viewers")).to_have_text("Also here: admin")
        bob.get_by_role("button", name="New conversation").click()
        expect(viewers).to_be_hidden()

        # A rename by admin reaches bob's list too.
        title = alice.get_by_role("textbox", name="Conversation title")
        title.fill("Offsite, final")
        title.press("Tab")
        expect(entry(bob, conv)).to_contain_text("Offsite, final")
        expect(bob.get_by_role("status", name="Workspace activity")).to_have_text(
            "admin renamed a conversation"
        )
    finally:
        alice.context.close()
        bob.context.close()

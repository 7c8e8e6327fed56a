"""Conversations in a team, in the browser: two members in separate contexts see what
the visibility lets them (Mine / Shared / All), a teammate forks but is told why they
cannot rename or delete, the trash restores, and Compare's columns are one list entry."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.servers import AppServer, add_member, app_database
from tests.test_browser import BOB_PASSWORD, answers, browser, choose, conversation_id, open_page, send  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server():
    with app_database() as env, AppServer(env) as server:
        add_member(env, "ann", BOB_PASSWORD)
        add_member(env, "ben", BOB_PASSWORD)
        yield server


def sidebar(page: Page):
    return page.get_by_role("complementary", name="Conversations")


def show(page: Page, which: str) -> None:
    button = sidebar(page).get_by_role("button", name=which, exact=True)
    button.click()
    expect(button).to_have_attribute("aria-pressed", "true")


def start(page: Page, message: str) -> int:
    page.get_by_role("button", name="New conversation").click()
    choose(page, "demo-echo")
    send(page, message)
    expect(answers(page).last).to_contain_text("completed")
    return conversation_id(page)


def test_two_members_see_what_visibility_allows_and_the_trash_restores(browser, server):  # noqa: F811
    ann = open_page(browser, server, "ann")
    ben = open_page(browser, server, "ben")
    try:
        start(ann, "Private plan")
        shared_toggle = ann.get_by_role("checkbox", name="Shared with workspace")
        expect(shared_toggle).to_be_checked()  # the workspace's default: shared
        shared_toggle.uncheck()
        private_item = sidebar(ann).get_by_role("listitem").filter(has_text="Private plan")
        expect(private_item.get_by_role("img", name="Private")).to_be_visible()
        shared_id = start(ann, "Shared idea")
        expect(ann.get_by_role("checkbox", name="Shared with workspace")).to_be_checked()
        shared_item = sidebar(ann).get_by_role("listitem").filter(has_text="Shared idea")
        expect(shared_item).to_contain_text("ann")  # the creator
        expect(shared_item.get_by_role("img", name="Private")).to_have_count(0)

        # Ben sees the shared one only, under All and Shared; nothing of his under Mine.
        ben.reload()
        for which in ("All", "Shared"):
            show(ben, which)
            expect(sidebar(ben).get_by_role("link", name="Shared idea")).to_be_visible()
            expect(sidebar(ben).get_by_role("link", name="Private plan")).to_have_count(0)
        show(ben, "Mine")
        expect(sidebar(ben).get_by_role("link")).to_have_count(0)
        expect(sidebar(ben)).to_contain_text("No conversations here yet.")
        ben.reload()  # the choice is kept
        expect(sidebar(ben).get_by_role("button", name="Mine", exact=True)).to_have_attribute(
            "aria-pressed", "true"
        )
        show(ben, "All")

        # He reads it, may not rename, delete or unshare it (told why), but forks it.
        sidebar(ben).get_by_role("link", name="Shared idea").click()
        expect(answers(ben)).to_have_count(1)
        for control in (
            ben.get_by_role("textbox", name="Conversation title"),
            ben.get_by_role("button", name="Delete conversation"),
            ben.get_by_role("checkbox", name="Shared with workspace"),
        ):
            expect(control).to_be_disabled()
            expect(control).to_have_attribute("title", re.compile("creator"))
        expect(ben.get_by_text(re.compile(r"Only the conversation's creator"))).to_be_visible()
        ben.get_by_role("region", name="Conversation").get_by_role("button", name="Fork").first.click()
        expect(ben.get_by_role("textbox", name="Conversation title")).to_have_value("Shared idea (fork)")
        expect(ben.get_by_role("textbox", name="Conversation title")).to_be_enabled()
        show(ben, "Mine")
        expect(sidebar(ben).get_by_role("link", name="Shared idea (fork)")).to_be_visible()

        # Ann deletes hers: gone from the list, in the Trash, restored.
        sidebar(ann).get_by_role("link", name="Shared idea").click()
        expect(ann).to_have_url(re.compile(rf"/c/{shared_id}/$"))
        ann.once("dialog", lambda dialog: dialog.accept())
        ann.get_by_role("button", name="Delete conversation").click()
        expect(sidebar(ann).get_by_role("link", name="Shared idea")).to_have_count(0)
        assert ben.request.get(f"/api/conversations/{shared_id}/").status == 404
        show(ann, "Trash")
        trashed = sidebar(ann).get_by_role("listitem").filter(has_text="Shared idea")
        expect(trashed).to_contain_text("deleted")
        trashed.get_by_role("button", name="Restore").click()
        expect(sidebar(ann)).to_contain_text("The trash is empty.")
        show(ann, "All")
        expect(sidebar(ann).get_by_role("link", name="Shared idea")).to_be_visible()
        assert ben.request.get(f"/api/conversations/{shared_id}/").status == 200
    finally:
        ann.context.close()
        ben.context.close()


def test_a_compare_of_three_columns_is_one_entry(browser, server):  # noqa: F811
    ann = open_page(browser, server, "ann")
    try:
        ann.goto("/compare/")
        ann.get_by_role("combobox", name="Columns").select_option("3")
        for k in (1, 2, 3):
            col = ann.get_by_role("region", name=f"Column {k}", exact=True)
            col.get_by_role("combobox", name="Provider").select_option(label="Demo")
            expect(col.get_by_role("combobox", name="Model")).to_have_value("demo-echo")
        ann.get_by_role("textbox", name="Message").fill("Three ways")
        ann.get_by_role("button", name="Compare", exact=True).click()
        for k in (1, 2, 3):
            col = ann.get_by_role("region", name=f"Column {k}", exact=True)
            expect(col.locator("[data-metric=status]")).to_have_text("completed")
        ann.goto("/")
        entry = (
            sidebar(ann).get_by_role("listitem").filter(has_text=re.compile(r"^Comparison: .*\(3 columns\)"))
        )
        expect(entry).to_have_count(1)
        expect(sidebar(ann).get_by_role("link", name=re.compile(r"^Compare: "))).to_have_count(0)  # folded
        entry.get_by_text(re.compile(r"^Comparison: ")).click()
        columns = entry.get_by_role("link", name=re.compile(r"^Compare: demo-echo #\d$"))
        expect(columns).to_have_count(3)
        columns.nth(1).click()
        expect(ann.get_by_role("textbox", name="Conversation title")).to_have_value("Compare: demo-echo #2")
    finally:
        ann.context.close()

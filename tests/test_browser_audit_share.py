"""Issue 17 in the browser: an owner shares a conversation, a logged-out visitor reads it
with no secrets, the owner revokes the link and it stops opening; the owner's Audit log
lists each step and a failed login; a member gets no Audit log link and a 403."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.servers import AppServer, add_member, app_database
from tests.test_browser import WAIT, answers, browser, choose, send  # noqa: F401

pytestmark = pytest.mark.browser

PASSWORD = "a-long-password-for-tests"


@pytest.fixture(scope="module")
def server():
    with app_database() as env, AppServer(env) as server:
        add_member(env, "olive", PASSWORD, role="owner")
        add_member(env, "mia", PASSWORD, role="member")
        yield server


def log_in(browser: Browser, server: AppServer, user: str) -> Page:  # noqa: F811
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("combobox", name="Model")).to_have_value("demo-echo")
    return page


def test_share_a_conversation_revoke_it_and_read_the_audit_log(browser: Browser, server: AppServer):  # noqa: F811
    owner = log_in(browser, server, "olive")
    choose(owner, "demo-echo")
    send(owner, "Shared **bold** words")
    expect(answers(owner).last).to_contain_text("completed")

    owner.get_by_role("button", name="Share", exact=True).click()
    dialog = owner.get_by_role("dialog", name="Share this conversation")
    dialog.get_by_role("button", name="Create link").click()
    box = dialog.get_by_role("textbox", name="Share link")
    expect(box).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/s/[A-Za-z0-9_-]{40,}/$"))
    expect(box).not_to_be_editable()
    link = box.input_value()
    expect(dialog.get_by_role("table", name="Share links").get_by_role("row")).to_have_count(2)  # head + 1

    stranger = browser.new_context(viewport={"width": 1280, "height": 800})
    stranger.set_default_timeout(WAIT)
    shared = stranger.new_page()
    assert shared.goto(link).status == 200
    expect(shared.get_by_role("heading", level=1)).to_have_text("Shared **bold** words")
    turns = shared.get_by_role("region", name="Conversation").get_by_role("article")
    expect(turns).to_have_count(2)
    expect(turns.nth(0)).to_contain_text("Shared **bold** words")  # the user's text, as typed
    expect(turns.nth(1).locator("strong")).to_have_text("bold")  # the answer, as Markdown
    html = shared.content()
    data = shared.request.get(link + "transcript.json").json()
    assert set(data) == {"title", "creator", "updated_at", "messages", "runs"}
    for text in (html, json.dumps(data)):
        for secret in ("base_url", "key_hint", "Authorization", "request_headers", "raw_frames", "sk-"):
            assert secret not in text, secret
    expect(shared.get_by_role("button", name="Send")).to_have_count(0)
    expect(shared.get_by_role("button", name="Share")).to_have_count(0)

    dialog.get_by_role("button", name="Revoke").click()
    expect(dialog.get_by_role("cell", name="revoked")).to_be_visible()
    assert shared.goto(link).status == 410
    expect(shared.get_by_role("alert")).to_contain_text("revoked")

    failed = stranger.new_page()
    failed.goto(server.url + "/accounts/login/")
    failed.get_by_label("Username").fill("mia")
    failed.get_by_label("Password").fill("not-her-password")
    failed.get_by_role("button", name="Log in").click()
    expect(failed.get_by_role("alert")).to_contain_text("didn't match")
    stranger.close()

    owner.get_by_role("button", name="Close").click()
    owner.get_by_role("link", name="Audit log").click()
    table = owner.get_by_role("table", name="Audit log")
    for action in ("conversation.shared", "share_link.revoked", "login.failed"):
        expect(table.get_by_role("row").filter(has_text=action)).to_have_count(1)
    failure = table.get_by_role("row").filter(has_text="login.failed")
    expect(failure).to_contain_text("mia")
    expect(failure).to_contain_text("127.0.0.1")

    owner.get_by_role("combobox", name="What").select_option("share_link.revoked")
    owner.get_by_role("button", name="Filter").click()
    expect(owner).to_have_url(re.compile(r"what=share_link\.revoked"))
    expect(table.get_by_role("row")).to_have_count(2)
    with owner.expect_download() as info:
        owner.get_by_role("link", name="Export CSV").click()
    exported = info.value.path().read_text()
    assert "share_link.revoked" in exported
    assert "conversation.shared" not in exported
    owner.context.close()

    member = log_in(browser, server, "mia")
    expect(member.get_by_role("link", name="Compare")).to_be_visible()
    expect(member.get_by_role("link", name="Audit log")).to_have_count(0)
    answer = member.goto("/audit/")
    assert answer.status == 403
    expect(member.get_by_role("alert")).to_have_text("Only owners and admins read the audit log.")
    member.context.close()

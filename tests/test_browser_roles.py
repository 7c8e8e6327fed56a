"""Issue 17, roles on the page: what a role may not do is disabled, and says why.

A viewer sees Send, New conversation, Import request and Add turn disabled, each with
the policy's reason as its accessible description (a visible note beside it); a member
on a teammate's shared conversation sees Send disabled with the reason and forks it.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from playground.access import POLICY
from tests.servers import AppServer, add_member, app_database
from tests.test_browser import BOB_PASSWORD, answers, browser, choose, conversation_id, open_page, send  # noqa: F401

pytestmark = pytest.mark.browser

CREATE = POLICY["conversation.create"].refusal
WRITE = POLICY["conversation.write"].refusal
WRITE_ANY = POLICY["conversation.write_any"].refusal


@pytest.fixture(scope="module")
def server():
    with app_database() as env, AppServer(env) as server:
        add_member(env, "vera", BOB_PASSWORD, role="viewer")
        add_member(env, "max", BOB_PASSWORD, role="member")
        yield server


@pytest.fixture(scope="module")
def shared_conversation(browser, server):  # noqa: F811
    """A conversation of the owner's (admin), shared with the workspace, with one answer."""
    page = open_page(browser, server)
    try:
        choose(page, "demo-echo")
        send(page, "Hello team")
        expect(answers(page)).to_contain_text("completed")
        return conversation_id(page)
    finally:
        page.context.close()


@pytest.fixture
def as_user(browser, server):  # noqa: F811
    pages: list[Page] = []

    def open_as(user: str) -> Page:
        pages.append(open_page(browser, server, user))
        return pages[-1]

    yield open_as
    for page in pages:
        page.context.close()


def elsewhere(conversation: int) -> re.Pattern:
    """The URL of another conversation's page (a fork's)."""
    return re.compile(rf"/c/(?!{conversation}/)\d+/$")


def expect_refused(control, reason: str) -> None:
    expect(control).to_be_disabled()
    expect(control).to_have_accessible_description(reason)


def test_a_viewer_sees_what_they_cannot_do_and_why(as_user, shared_conversation):
    page = as_user("vera")
    expect_refused(page.get_by_role("button", name="New conversation"), CREATE)
    expect_refused(page.get_by_role("button", name="Import request"), CREATE)
    expect_refused(page.get_by_role("button", name="Send"), CREATE)
    expect_refused(page.get_by_role("button", name="Add turn"), CREATE)
    expect(page.get_by_text(CREATE).first).to_be_visible()

    page.goto(f"/c/{shared_conversation}/")
    expect(page.get_by_role("region", name="Conversation")).to_contain_text("Hello team")
    send_button = page.get_by_role("button", name="Send")
    expect_refused(send_button, WRITE)
    expect_refused(page.get_by_role("button", name="Add turn"), WRITE)
    expect_refused(page.get_by_role("button", name="Regenerate this answer"), WRITE)
    expect_refused(page.get_by_role("button", name="Delete this answer"), WRITE)
    expect_refused(page.get_by_role("button", name=re.compile(r"^Edit user turn \d+$")), WRITE)
    expect_refused(page.get_by_role("button", name="Probe"), POLICY["provider.use"].refusal)
    expect(page.get_by_text(WRITE)).to_be_visible()
    expect(page.get_by_role("button", name="New conversation")).to_be_disabled()

    # Viewers fork into a private conversation of their own, where they still do not send.
    page.get_by_role("button", name="Fork", exact=True).click()
    expect(page).to_have_url(elsewhere(shared_conversation))
    expect(page.get_by_role("region", name="Conversation")).to_contain_text("Hello team")
    expect_refused(page.get_by_role("button", name="Send"), WRITE)


def test_a_member_on_a_teammates_conversation_forks_it_to_send(as_user, shared_conversation):
    page = as_user("max")
    expect(page.get_by_role("button", name="New conversation")).to_be_enabled()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("button", name="Fork", exact=True)).to_be_hidden()

    page.goto(f"/c/{shared_conversation}/")
    expect(page.get_by_role("region", name="Conversation")).to_contain_text("Hello team")
    send_button = page.get_by_role("button", name="Send")
    expect_refused(send_button, WRITE_ANY)
    expect(page.get_by_text(WRITE_ANY)).to_be_visible()
    expect(page.get_by_role("button", name="New conversation")).to_be_enabled()

    page.get_by_role("button", name="Fork", exact=True).click()
    expect(page).to_have_url(elsewhere(shared_conversation))
    expect(page.get_by_role("region", name="Conversation")).to_contain_text("Hello team")
    expect(send_button).to_be_enabled()
    expect(send_button).not_to_have_accessible_description(WRITE_ANY)
    expect(page.get_by_role("button", name="Fork", exact=True)).to_be_hidden()
    send(page, "Now mine")
    expect(answers(page).last).to_contain_text("completed")

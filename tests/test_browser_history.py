"""Export a conversation from the page (JSON, Markdown) and import the file back."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.test_browser import answers, browser, choose, conversation_id, page, send, server  # noqa: F401

pytestmark = pytest.mark.browser


def download(page: Page, link: str, folder) -> tuple[str, str]:  # noqa: F811
    """Open the Export menu, click `link`, and return the file's suggested name and text."""
    page.get_by_role("button", name="Export", exact=True).click()
    with page.expect_download() as info:
        page.get_by_role("link", name=link).click()
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return info.value.suggested_filename, path.read_text(encoding="utf-8")


def transcript(page: Page):  # noqa: F811
    return page.get_by_role("region", name="Conversation").get_by_role("article")


def test_export_json_and_import_it_as_a_new_conversation(page: Page, tmp_path):  # noqa: F811
    export = page.get_by_role("button", name="Export", exact=True)
    expect(export).to_be_disabled()  # nothing to export before a conversation is shown
    choose(page, "demo-echo", temperature="0.4", seed="11")
    page.get_by_role("textbox", name="System prompt").fill("Answer plainly.")
    send(page, "Round trip via a file")
    expect(answers(page).last).to_contain_text("completed")
    original = conversation_id(page)
    expect(export).to_be_enabled()

    name, text = download(page, "Export JSON", tmp_path)
    assert name == "round-trip-via-a-file.json"
    document = json.loads(text)
    assert document["messages"] == [
        {"role": "system", "content": "Answer plainly."},
        {"role": "user", "content": "Round trip via a file"},
        {"role": "assistant", "content": "Round trip via a file"},
    ]
    assert (document["model"], document["temperature"], document["seed"]) == ("demo-echo", 0.4, 11)
    assert document["playground_export"]["title"] == "Round trip via a file"

    # Other settings on the panel, then the file through the Import control.
    page.get_by_label("temperature", exact=True).fill("1.5")
    page.get_by_role("textbox", name="System prompt").fill("Something else.")
    page.get_by_label("Import conversation file").set_input_files(tmp_path / name)
    expect(page).not_to_have_url(re.compile(rf"/c/{original}/$"))
    imported = conversation_id(page)
    assert imported != original
    turns = transcript(page)
    expect(turns.locator(":scope > header")).to_have_text(["user", "assistant"])
    expect(turns.nth(0).locator(".body")).to_have_text("Round trip via a file")
    expect(turns.nth(1).locator(".body")).to_have_text("Round trip via a file")
    expect(page.get_by_role("textbox", name="Conversation title")).to_have_value("Round trip via a file")
    expect(page.get_by_role("textbox", name="System prompt")).to_have_value("Answer plainly.")
    expect(page.get_by_label("temperature", exact=True)).to_have_value("0.4")
    expect(page.get_by_label("seed", exact=True)).to_have_value("11")
    expect(page.get_by_role("combobox", name="Model")).to_have_value("demo-echo")
    expect(page.get_by_role("link", name="Round trip via a file")).to_have_count(2)  # both in the list
    again = page.request.get(f"/api/conversations/{imported}/export.json").json()
    assert again["messages"] == document["messages"]

    page.get_by_role("button", name="New conversation").click()
    expect(export).to_be_disabled()


def test_export_markdown_holds_the_answer(page: Page, tmp_path):  # noqa: F811
    choose(page, "demo-echo")
    send(page, "Markdown keeps **this** answer")
    expect(answers(page).last).to_contain_text("completed")
    name, text = download(page, "Export Markdown", tmp_path)
    assert name == "markdown-keeps-this-answer.md"
    assert text.startswith("# Markdown keeps **this** answer\n\n## User\n\nMarkdown keeps **this** answer\n")
    answer = "\n## Assistant\n\nMarkdown keeps **this** answer\n\n"
    assert answer + "*demo-echo via Demo · finish_reason: stop · " in text
    assert re.search(r"\d+ prompt \+ \d+ completion = \d+ tokens · first token \d+(\.\d+)? m?s\*\n$", text)


def test_an_unreadable_file_is_refused_in_plain_words(page: Page):  # noqa: F811
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "21°C"}]}
    page.get_by_label("Import conversation file").set_input_files(
        {"name": "notes.json", "mimeType": "application/json", "buffer": json.dumps(bad).encode()}
    )
    expect(page.get_by_role("alert").filter(has_text="Could not import")).to_have_text(
        "Could not import notes.json: messages[1].tool_call_id: "
        "a tool result needs the id of the tool call it answers"
    )
    expect(page).not_to_have_url(re.compile(r"/c/\d+/$"))

"""A long answer streams as Markdown without the page rendering all of it again on every frame."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from playground.tokens import count_tokens
from tests.test_browser import answer_text, answers, browser, choose, full_text, last_run, page, send, server  # noqa: F401

pytestmark = pytest.mark.browser

# Watches the transcript while an answer streams (its footer says "streaming…"): how much
# text was put on the page, and, each time content was replaced by new content, how much
# of the text already shown was rendered again.
WATCH_RENDERS = """() => {
  window.streamed = { shown: 0, again: [] };
  const chars = (nodes) => [...nodes].reduce((n, node) => n + node.textContent.length, 0);
  new MutationObserver((records) => {
    for (const r of records) {
      const status = r.target.closest("article")?.querySelector("footer")?.textContent || "";
      if (!status.startsWith("streaming")) continue;
      window.streamed.shown += chars(r.addedNodes);
      if (r.removedNodes.length && r.addedNodes.length) window.streamed.again.push(chars(r.removedNodes));
    }
  }).observe(document.getElementById("transcript"), { childList: true, subtree: true });
}"""


def test_a_long_answer_without_blank_lines_is_not_rendered_whole_on_every_frame(page: Page):  # noqa: F811
    # 20,000 tokens (~120,000 characters) in one paragraph: demo-lorem never writes a newline.
    choose(page, "demo-lorem", max_tokens="20000", extra_body='{"tokens_per_second": 4000}')
    page.evaluate(WATCH_RENDERS)
    send(page, "Write at length.")
    answer = answers(page).last
    expect(answer).to_contain_text("completed · ", timeout=60_000)
    expected = full_text(page, last_run(page))
    assert count_tokens(expected) == 20_000
    # The final render is the Markdown of the whole text: one paragraph with every word.
    expect(answer.get_by_role("paragraph")).to_have_count(1)
    assert answer_text(answer) == expected
    streamed = page.evaluate("window.streamed")
    # It showed while it streamed: most of its text was on the page before the end...
    assert streamed["shown"] > len(expected) / 2, streamed["shown"]
    # ...and no frame rendered again more than a small part of what was already shown
    # (a frame used to parse, sanitize and lay out the whole answer so far again).
    again = streamed["again"]
    assert max(again) < len(expected) / 10, (max(again), len(again), sum(again))


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Lorem ipsum. Dolor sit amet. Sed do", "Lorem ipsum. Dolor sit amet. "),
        ("你好。世界！还有", "你好。世界！"),
        ("line one\nline two\nline", "line one\nline two\n"),
        ("It costs $5. - not a list item", ""),  # no letter before the full stop
        ("1. item\n2. item", "1. item\n"),
        ("**Bold. Still bold** and", ""),  # emphasis open at the sentence end
        ("Some `code. Here` then. More", "Some `code. Here` then. "),
        ("See [the. Docs](x) and. More", "See [the. Docs](x) and. "),
        ("a | b\n--|--\n1 | 2\n3", ""),  # a table
    ],
)
def test_a_long_block_is_cut_only_where_its_pieces_read_as_it_does(page: Page, text, kept):  # noqa: F811
    at = page.evaluate("async (text) => (await import('/static/js/common.js')).cutPoint(text)", text)
    assert text[:at] == kept

"""Searching conversations by title and by the text of their messages."""

import pytest

from playground.models import Conversation, Message, Workspace


@pytest.fixture
def conversations(alice, workspace):
    def make(title, *texts, where=workspace):
        conv = Conversation.objects.create(workspace=where, creator=alice, title=title)
        for position, content in enumerate(texts, 1):
            Message.objects.create(conversation=conv, position=position, role="user", content=content)
        return conv

    other = Workspace.objects.create(name="Elsewhere", slug="elsewhere")
    return {
        "tides": make("Tides", "Why are there two high tides a day?"),
        "cafe": make("Menu", 'Translate "Crème brûlée" and\nthe café sign'),
        "parts": make("Picture", [{"type": "text", "text": "What bird is this?"}, {"type": "image_url"}]),
        "title": make("Bird watching notes", "hello"),
        "foreign": make("Tides abroad", "two high tides", where=other),
    }


def search(client, query):
    response = client.get("/api/conversations/", {"q": query})
    assert response.status_code == 200
    return {c["title"]: c["match"] for c in response.json()["conversations"]}


def test_search_finds_message_text_and_titles_in_this_workspace_only(as_alice, conversations):
    assert search(as_alice, "HIGH TIDES") == {"Tides": "Why are there two high tides a day?"}
    assert search(as_alice, "bird") == {"Picture": "What bird is this?", "Bird watching notes": ""}


def test_search_matches_non_ascii_quotes_and_newlines(as_alice, conversations):
    assert "Menu" in search(as_alice, "café")
    assert "Menu" in search(as_alice, '"Crème brûlée"')
    assert search(as_alice, "nothing like this") == {}


def test_search_does_not_match_json_syntax_or_part_types(as_alice, conversations):
    assert search(as_alice, "image_url") == {}
    assert search(as_alice, '"type"') == {}

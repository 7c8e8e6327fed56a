"""Issue 17, share links: create, list and revoke them on a conversation; the shared page
and its transcript.json open for anyone (public links) or members only, show the
transcript and live runs, say in words why a link no longer opens, and never carry a key,
the provider's base URL, headers or raw frames."""

import datetime
import json
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from playground.models import (
    AuditEvent,
    Conversation,
    Membership,
    Message,
    Run,
    ShareLink,
    token_digest,
)
from tests.conftest import CANARY_KEY

pytestmark = pytest.mark.django_db

SECRET_URL = "https://relay.secret.example/v1"
SECRET_HEADER = "Bearer sk-header-secret-9999"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def create(client, conversation, **body):
    return client.post(
        f"/api/conversations/{conversation.id}/share-links/",
        json.dumps(body),
        content_type="application/json",
    )


def token_of(url: str) -> str:
    return re.search(r"/s/([A-Za-z0-9_-]+)/$", url).group(1)


@pytest.fixture
def transcript(conversation, provider, alice):
    """alice's conversation: a question, an answer in Markdown, a finished run and a live
    one, both holding the secrets a shared page must never show."""
    conversation.title = "Plans"
    conversation.save()
    Message.objects.create(conversation=conversation, position=0, role="user", content="What is **2+2**?")
    secrets = {
        "provider": provider,
        "provider_name": provider.name,
        "base_url": SECRET_URL,
        "request_headers": {"Authorization": SECRET_HEADER, "X-Key-Hint": provider.key_hint},
        "response_headers": {"x-upstream": "secret-upstream-header"},
        "raw_frames": [{"data": "raw-frame-secret"}],
        "conversation": conversation,
        "workspace": conversation.workspace,
        "user": alice,
        "model": "demo-model",
    }
    done = Run.objects.create(status=Run.Status.COMPLETED, position=1, **secrets)
    Message.objects.create(
        conversation=conversation, position=1, role="assistant", content="It is **4**.", run=done
    )
    Run.objects.create(status=Run.Status.STREAMING, position=2, **secrets)
    return conversation


def assert_no_secrets(text: str, provider) -> None:
    for secret in (
        SECRET_URL,
        "relay.secret.example",
        SECRET_HEADER,
        "Authorization",
        CANARY_KEY,
        provider.key_hint,
        "key_hint",
        "request_headers",
        "raw_frames",
        "raw-frame-secret",
        "secret-upstream-header",
        "base_url",
        provider.base_url,
    ):
        assert secret not in text, secret


def test_the_creator_shares_a_conversation_and_the_link_opens_logged_out(
    as_alice, alice, transcript, provider
):
    answer = create(as_alice, transcript, expires_in_days=7)
    assert answer.status_code == 201
    link = answer.json()
    token = token_of(link["url"])
    stored = ShareLink.objects.get(id=link["id"])
    assert stored.token_hash == token_digest(token)
    assert token not in stored.token_hash
    assert stored.expires_at > timezone.now() + datetime.timedelta(days=6)
    event = AuditEvent.objects.get(action="conversation.shared")
    assert event.actor == alice
    assert event.target_id == str(transcript.id)
    assert token not in json.dumps(event.details)

    public = Client()
    page = public.get(f"/s/{token}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Plans" in html
    assert "What is **2+2**?" in html
    assert "It is **4**." in html
    assert_no_secrets(html, provider)
    data = public.get(f"/s/{token}/transcript.json").json()
    assert [m["content"] for m in data["messages"]] == ["What is **2+2**?", "It is **4**."]
    assert [r["status"] for r in data["runs"]] == ["streaming"]  # the live run, not the finished one
    assert set(data["runs"][0]) == {"id", "status", "model", "user"}
    assert_no_secrets(json.dumps(data), provider)


def test_links_are_listed_without_their_token_and_revoked_links_say_so(as_alice, alice, transcript):
    first = create(as_alice, transcript).json()
    create(as_alice, transcript)
    listed = as_alice.get(f"/api/conversations/{transcript.id}/share-links/").json()["links"]
    assert len(listed) == 2
    assert {link["created_by"] for link in listed} == {"alice"}
    assert all("url" not in link and "token" not in link for link in listed)
    assert listed[1]["expires_at"] is None
    assert listed[1]["active"]

    token = token_of(first["url"])
    assert as_alice.delete(f"/api/share-links/{first['id']}/").status_code == 200
    gone = Client().get(f"/s/{token}/")
    assert gone.status_code == 410
    assert "revoked" in gone.content.decode()
    assert Client().get(f"/s/{token}/transcript.json").status_code == 410
    event = AuditEvent.objects.get(action="share_link.revoked")
    assert event.actor == alice
    assert event.details["link"] == first["id"]
    as_alice.delete(f"/api/share-links/{first['id']}/")  # revoking again changes nothing
    assert AuditEvent.objects.filter(action="share_link.revoked").count() == 1


def test_an_expired_link_and_a_trashed_conversations_link_stop_working(as_alice, transcript):
    token = token_of(create(as_alice, transcript, expires_in_days=1).json()["url"])
    ShareLink.objects.update(expires_at=timezone.now() - datetime.timedelta(minutes=1))
    expired = Client().get(f"/s/{token}/")
    assert expired.status_code == 410
    assert "expired" in expired.content.decode()

    token = token_of(create(as_alice, transcript).json()["url"])
    assert Client().get(f"/s/{token}/").status_code == 200
    Conversation.objects.filter(id=transcript.id).update(deleted_at=timezone.now())
    trashed = Client().get(f"/s/{token}/")
    assert trashed.status_code == 410
    assert "deleted" in trashed.content.decode()


def test_an_unknown_token_is_a_404_in_words(db):
    answer = Client().get("/s/not-a-real-token/")
    assert answer.status_code == 404
    assert "does not exist" in answer.content.decode()
    assert Client().get("/s/not-a-real-token/transcript.json").status_code == 404


def test_members_only_links_send_strangers_to_log_in_and_outsiders_get_a_404(
    as_alice, transcript, bob, charlie
):
    transcript.workspace.public_share_links = False
    transcript.workspace.save()
    token = token_of(create(as_alice, transcript).json()["url"])
    logged_out = Client().get(f"/s/{token}/")
    assert logged_out.status_code == 302
    assert logged_out["Location"].startswith("/accounts/login/")
    assert Client().get(f"/s/{token}/transcript.json").status_code == 401
    outsider = client_for(charlie).get(f"/s/{token}/")
    assert outsider.status_code == 404
    assert "only for members" in outsider.content.decode()
    assert client_for(bob).get(f"/s/{token}/").status_code == 200


def test_only_who_may_change_the_conversation_shares_or_revokes_it(
    as_alice, transcript, bob, charlie, workspace
):
    transcript.visibility = Conversation.Visibility.SHARED
    transcript.save()
    link = create(as_alice, transcript).json()
    assert create(client_for(bob), transcript).status_code == 403  # a teammate reads, does not share
    assert client_for(bob).delete(f"/api/share-links/{link['id']}/").status_code == 403
    assert create(client_for(charlie), transcript).status_code == 404
    assert client_for(charlie).delete(f"/api/share-links/{link['id']}/").status_code == 404
    admin = User.objects.create_user("adam", password="x")
    Membership.objects.create(workspace=workspace, user=admin, role=Membership.Role.ADMIN)
    assert create(client_for(admin), transcript).status_code == 201
    assert client_for(admin).delete(f"/api/share-links/{link['id']}/").status_code == 200
    assert ShareLink.objects.count() == 2
    assert Client().post(f"/api/conversations/{transcript.id}/share-links/").status_code == 401


@pytest.mark.parametrize("days", [0, -1, 366, "7", 1.5, True, [1]])
def test_a_bad_expiry_is_a_400_naming_the_field_and_stores_nothing(as_alice, transcript, days):
    answer = create(as_alice, transcript, expires_in_days=days)
    assert answer.status_code == 400
    assert "expires_in_days" in answer.json()["fields"]
    assert not ShareLink.objects.exists()
    assert not AuditEvent.objects.exists()


def test_an_unknown_field_is_a_400(as_alice, transcript):
    answer = create(as_alice, transcript, token="mine")
    assert answer.status_code == 400
    assert "token" in answer.json()["fields"]
    assert not ShareLink.objects.exists()


def test_the_shared_page_is_read_only(as_alice, transcript):
    token = token_of(create(as_alice, transcript).json()["url"])
    assert Client().post(f"/s/{token}/").status_code == 405
    assert Client().post(f"/s/{token}/transcript.json").status_code == 405


def test_the_conversation_page_offers_share(as_alice, conversation):
    html = as_alice.get(f"/c/{conversation.id}/").content.decode()
    assert ">Share</button>" in html
    assert 'id="share-link"' in html
    assert "readonly" in html

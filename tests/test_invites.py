"""Issue 17, invitations: links with a role, expiry and use count (or for one email), the
token stored hashed, listed and revocable; the invite page signs up or logs in and joins."""

import re
import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from playground.models import AuditEvent, Invitation, Membership, token_digest
from playground.views import members as members_views

Role = Membership.Role


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def create(client, workspace, **fields) -> tuple[str, object]:
    data = {"role": "member", "expires_in": 7, "max_uses": 1, "email": ""} | fields
    response = client.post(reverse("invite-create", args=[workspace.id]), data)
    html = response.content.decode()
    match = re.search(r'id="invite-link" type="text" readonly value="([^"]+)"', html)
    return (match.group(1) if match else ""), response


def path_of(link: str) -> str:
    return link.split("testserver", 1)[1]


def signup(client, link, username="newbie", password="Zq8!signup-pass"):
    return client.post(path_of(link), {"username": username, "password1": password, "password2": password})


def test_create_link_stores_only_the_digest_and_is_audited(workspace, as_alice):
    link, response = create(as_alice, workspace, role="viewer")
    assert response.status_code == 200
    assert "/invite/" in link
    token = link.rstrip("/").rsplit("/", 1)[1]
    invitation = Invitation.objects.get()
    assert invitation.token_hash == token_digest(token)
    assert token not in invitation.token_hash
    assert invitation.role == "viewer"
    assert invitation.max_uses == 1
    assert timedelta(days=6) < invitation.expires_at - timezone.now() <= timedelta(days=7)
    [event] = AuditEvent.objects.filter(action="member.invited")
    assert token not in str(event.details)
    assert event.details["role"] == "viewer"
    page = as_alice.get(reverse("members")).content.decode()
    assert token not in page
    assert "anyone with the link" in page
    assert "0 / 1" in page
    assert len(mail.outbox) == 0


def test_invite_roles_follow_the_policy(workspace, alice):
    ann = User.objects.create_user("ann")
    Membership.objects.create(workspace=workspace, user=ann, role=Role.ADMIN)
    _, response = create(client_for(ann), workspace, role="admin")
    assert response.status_code == 400
    assert "Role:" in response.content.decode()
    assert not Invitation.objects.exists()
    _, ok = create(client_for(alice), workspace, role="admin")
    assert ok.status_code == 200
    assert Invitation.objects.get().role == "admin"
    _, owner = create(client_for(alice), workspace, role="owner")
    assert owner.status_code == 400


def test_members_and_viewers_may_not_invite(workspace, bob):
    _, response = create(client_for(bob), workspace)
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_bad_invite_fields_are_400_and_store_nothing(workspace, as_alice):
    for fields in ({"max_uses": 0}, {"expires_in": 3}, {"email": "not-an-email"}):
        _, response = create(as_alice, workspace, **fields)
        assert response.status_code == 400
    assert not Invitation.objects.exists()


def test_inviting_an_email_sends_the_link(workspace, as_alice):
    link, _ = create(as_alice, workspace, email="new@example.com")
    [message] = mail.outbox
    assert message.to == ["new@example.com"]
    assert link in message.body
    assert "Acme" in message.subject


def test_sign_up_and_join_logged_out(workspace, alice, as_alice):
    link, _ = create(as_alice, workspace, role="viewer")
    client = Client()
    page = client.get(path_of(link)).content.decode()
    for label in ("Username", "Password", "Password confirmation", "Join", "Log in instead"):
        assert label in page
    response = signup(client, link)
    assert response.status_code == 302
    newbie = User.objects.get(username="newbie")
    assert Membership.objects.get(user=newbie).role == "viewer"
    assert client.get("/").status_code == 200  # logged in
    invitation = Invitation.objects.get()
    assert invitation.uses == 1
    assert AuditEvent.objects.get(action="member.joined").actor_name == "newbie"
    # single-use: the next person is told so, in words
    again = Client().get(path_of(link))
    assert again.status_code == 410
    assert "already been used" in again.content.decode()


def test_a_bad_signup_is_400_and_creates_no_one(workspace, as_alice):
    link, _ = create(as_alice, workspace)
    response = Client().post(path_of(link), {"username": "x", "password1": "a", "password2": "b"})
    assert response.status_code == 400
    assert "Password confirmation" in response.content.decode()
    assert not User.objects.filter(username="x").exists()
    assert Invitation.objects.get().uses == 0


def test_join_logged_in(workspace, as_alice, charlie):
    link, _ = create(as_alice, workspace)
    client = client_for(charlie)
    page = client.get(path_of(link)).content.decode()
    assert "Join" in page
    assert "Password confirmation" not in page
    assert client.post(path_of(link)).status_code == 302
    assert Membership.objects.get(user=charlie, workspace=workspace).role == "member"


def test_an_existing_member_keeps_their_role_and_the_use(workspace, as_alice, bob):
    link, _ = create(as_alice, workspace, role="admin")
    client = client_for(bob)
    assert "already a member" in client.get(path_of(link)).content.decode()
    client.post(path_of(link))
    assert Membership.objects.get(user=bob).role == "member"
    assert Invitation.objects.get().uses == 0


def test_a_bad_token_says_only_not_valid(db):
    response = Client().get("/invite/not-a-real-token/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "This invite link is not valid." in html
    assert "Acme" not in html


def test_expired_and_revoked_links(workspace, as_alice, charlie):
    link, _ = create(as_alice, workspace)
    invitation = Invitation.objects.get()
    Invitation.objects.filter(id=invitation.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "expired" in Client().get(path_of(link)).content.decode()
    Invitation.objects.filter(id=invitation.id).update(expires_at=timezone.now() + timedelta(days=1))
    assert as_alice.post(reverse("invite-revoke", args=[invitation.id])).status_code == 302
    response = client_for(charlie).post(path_of(link))
    assert response.status_code == 410
    assert "revoked" in response.content.decode()
    assert not Membership.objects.filter(user=charlie, workspace=workspace).exists()
    assert AuditEvent.objects.filter(action="invite.revoked").count() == 1


def test_revoke_needs_the_role_and_the_workspace(workspace, as_alice, bob, charlie):
    create(as_alice, workspace)
    invitation = Invitation.objects.get()
    assert client_for(bob).post(reverse("invite-revoke", args=[invitation.id])).status_code == 403
    assert client_for(charlie).post(reverse("invite-revoke", args=[invitation.id])).status_code == 404
    assert Invitation.objects.get().revoked_at is None


def test_an_email_invite_is_only_for_that_account(workspace, as_alice, charlie):
    link, _ = create(as_alice, workspace, email="dora@example.com")
    response = client_for(charlie).post(path_of(link))
    assert response.status_code == 410
    assert "another email address" in response.content.decode()
    dora = User.objects.create_user("dora", email="Dora@example.com")
    assert client_for(dora).post(path_of(link)).status_code == 302
    assert Membership.objects.filter(user=dora, workspace=workspace).exists()


def test_a_multi_use_link_stops_at_max_uses(workspace, as_alice):
    link, _ = create(as_alice, workspace, max_uses=2)
    for name in ("one", "two", "three"):
        signup(Client(), link, username=name)
    assert (
        Membership.objects.filter(workspace=workspace, user__username__in=["one", "two", "three"]).count()
        == 2
    )
    assert Invitation.objects.get().uses == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_joins_never_exceed_max_uses(workspace, alice):
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite serialises writers)")
    link, _ = create(client_for(alice), workspace, max_uses=2)
    token = link.rstrip("/").rsplit("/", 1)[1]
    users = [User.objects.create_user(f"racer{i}") for i in range(6)]
    barrier = threading.Barrier(len(users))
    results = []

    def race(user):
        barrier.wait()
        try:
            results.append(members_views.join(None, token, user))
        except members_views.JoinError:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Invitation.objects.get().uses == 2
    assert Membership.objects.filter(workspace=workspace, user__in=users).count() == 2
    assert results.count("refused") == 4


def test_sign_up_takes_an_optional_email_and_an_email_invite_sets_it(workspace, as_alice):
    link, _ = create(as_alice, workspace, max_uses=2)
    password = "Zq8!signup-pass"
    data = {"username": "eve", "email": "eve@example.com", "password1": password, "password2": password}
    assert Client().post(path_of(link), data).status_code == 302
    assert User.objects.get(username="eve").email == "eve@example.com"
    emailed, _ = create(as_alice, workspace, email="fay@example.com")
    assert "Email (optional" not in Client().get(path_of(emailed)).content.decode()
    assert signup(Client(), emailed, username="fay").status_code == 302
    assert User.objects.get(username="fay").email == "fay@example.com"

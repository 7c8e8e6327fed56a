"""Issue 17, members without the admin site: the members page, roles, removal, transfer,
leaving, workspaces (new, settings, rename, delete) and accounts."""

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.urls import reverse

from playground.models import AuditEvent, Conversation, Membership, Provider, Run, Workspace
from tests.test_access import closed_with, cookie
from tests.test_relay import watch

Role = Membership.Role


def member(workspace, username, role, email=""):
    user = User.objects.create_user(username, email=email, password=f"{username}-password")
    return Membership.objects.create(workspace=workspace, user=user, role=role)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def team(workspace, alice):
    """alice owns Acme; ann is an admin, mel a member, val a viewer."""
    return {
        "owner": Membership.objects.get(user=alice),
        "admin": member(workspace, "ann", Role.ADMIN, "ann@example.com"),
        "member": member(workspace, "mel", Role.MEMBER),
        "viewer": member(workspace, "val", Role.VIEWER),
    }


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_members_page_lists_members_and_the_roles_table(team, as_alice):
    response = as_alice.get(reverse("members"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'aria-label="Members"' in html
    for username in ("alice", "ann", "mel", "val"):
        assert f'data-username="{username}"' in html
    assert "ann@example.com" in html
    assert "Add, edit, test and delete providers; rotate keys; set prices" in html  # from POLICY
    assert "Create invite link" in html
    assert "Transfer ownership" in html
    assert 'href="/workspace/members/"' in html
    assert 'href="/account/"' in html


def test_a_viewer_sees_members_but_no_controls(team):
    html = client_for(team["viewer"].user).get(reverse("members")).content.decode()
    assert 'data-username="alice"' in html
    assert "Create invite link" not in html
    assert "Change role" not in html
    assert "Transfer ownership" not in html
    assert "Leave workspace" in html
    assert "Only owners and admins invite people." in html
    assert "Only owners and admins manage members." in html


def test_members_page_of_another_workspace_is_a_404(team, charlie):
    other = Membership.objects.get(user=charlie).workspace
    assert (
        client_for(team["admin"].user).get(reverse("workspace-members", args=[other.id])).status_code == 404
    )


def test_owner_changes_a_role_and_it_is_audited(team, as_alice):
    target = team["member"]
    response = as_alice.post(reverse("member-role", args=[target.id]), {"role": "viewer"})
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.role == "viewer"
    [event] = events("member.role_changed")
    assert event.details == {"before": "member", "after": "viewer"}
    assert event.actor_name == "alice"


def test_an_admin_manages_members_but_not_admins_or_the_owner(team):
    ann = client_for(team["admin"].user)
    assert ann.post(reverse("member-role", args=[team["viewer"].id]), {"role": "member"}).status_code == 302
    for target, role in ((team["member"], "admin"), (team["owner"], "member")):
        response = ann.post(reverse("member-role", args=[target.id]), {"role": role})
        assert response.status_code == 403
    other_admin = member(team["owner"].workspace, "ada", Role.ADMIN)
    assert ann.post(reverse("member-remove", args=[other_admin.id])).status_code == 403
    assert (
        "Only the owner manages admins."
        in ann.post(reverse("member-remove", args=[other_admin.id])).content.decode()
    )
    assert Membership.objects.filter(id=other_admin.id).exists()
    assert Membership.objects.get(id=team["member"].id).role == "member"
    assert Membership.objects.get(id=team["owner"].id).role == "owner"


def test_a_member_may_not_change_roles(team):
    mel = client_for(team["member"].user)
    assert mel.post(reverse("member-role", args=[team["viewer"].id]), {"role": "member"}).status_code == 403
    assert Membership.objects.get(id=team["viewer"].id).role == "viewer"


def test_owner_is_changed_only_by_transfer_even_by_the_owner(team, as_alice):
    response = as_alice.post(reverse("member-role", args=[team["owner"].id]), {"role": "admin"})
    assert response.status_code == 403
    bad = as_alice.post(reverse("member-role", args=[team["member"].id]), {"role": "owner"})
    assert bad.status_code == 400  # owner is not a role one gives: transfer
    assert Membership.objects.filter(role="owner").count() == 1


def test_a_bad_role_is_a_400(team, as_alice):
    assert (
        as_alice.post(reverse("member-role", args=[team["member"].id]), {"role": "boss"}).status_code == 400
    )


def test_role_change_outside_own_workspace_is_404(team, charlie):
    target = Membership.objects.get(user=charlie)
    assert (
        client_for(team["admin"].user)
        .post(reverse("member-role", args=[target.id]), {"role": "viewer"})
        .status_code
        == 404
    )


def test_remove_a_member(team, as_alice):
    target = team["member"]
    assert as_alice.post(reverse("member-remove", args=[target.id])).status_code == 302
    assert not Membership.objects.filter(id=target.id).exists()
    [event] = events("member.removed")
    assert event.target_name == "mel"
    assert event.details == {"role": "member"}


@pytest.mark.django_db(transaction=True)
async def test_removing_a_member_from_the_page_closes_their_open_socket_at_once(workspace, alice, bob):
    conversation = await Conversation.objects.acreate(workspace=workspace, creator=alice, visibility="shared")
    ws = await watch(await cookie(bob), conversation)
    target = await Membership.objects.aget(user=bob)

    def remove():
        return client_for(alice).post(reverse("member-remove", args=[target.id]))

    response = await sync_to_async(remove)()
    assert response.status_code == 302
    assert await closed_with(ws) == 4403


def test_transfer_ownership(team, as_alice):
    response = as_alice.post(
        reverse("workspace-transfer", args=[team["owner"].workspace_id]), {"membership": team["member"].id}
    )
    assert response.status_code == 302
    roles = dict(Membership.objects.values_list("user__username", "role"))
    assert roles["alice"] == "admin"
    assert roles["mel"] == "owner"
    assert list(Membership.objects.filter(role="owner").values_list("user__username", flat=True)) == ["mel"]
    [event] = events("workspace.transferred")
    assert event.target_name == "mel"
    assert event.details["before"] == "member"


def test_only_the_owner_transfers_and_only_to_a_member(team, as_alice, charlie):
    ws_id = team["owner"].workspace_id
    assert (
        client_for(team["admin"].user)
        .post(reverse("workspace-transfer", args=[ws_id]), {"membership": team["admin"].id})
        .status_code
        == 403
    )
    outsider = Membership.objects.get(user=charlie)
    assert (
        as_alice.post(reverse("workspace-transfer", args=[ws_id]), {"membership": outsider.id}).status_code
        == 400
    )
    assert as_alice.post(reverse("workspace-transfer", args=[ws_id]), {"membership": "x"}).status_code == 400
    assert Membership.objects.get(id=team["owner"].id).role == "owner"


def test_leave(team, as_alice):
    ws_id = team["owner"].workspace_id
    refused = as_alice.post(reverse("workspace-leave", args=[ws_id]))
    assert refused.status_code == 409
    assert "transfer ownership" in refused.content.decode()
    assert client_for(team["viewer"].user).post(reverse("workspace-leave", args=[ws_id])).status_code == 302
    assert not Membership.objects.filter(id=team["viewer"].id).exists()
    assert events("member.left")[0].actor_name == "val"


def test_new_workspace_gets_an_owner_and_the_demo_provider(charlie):
    client = client_for(charlie)
    assert client.get(reverse("workspace-new")).status_code == 200
    response = client.post(reverse("workspace-new"), {"name": "Side project"})
    assert response.status_code == 302
    workspace = Workspace.objects.get(name="Side project")
    assert Membership.objects.get(workspace=workspace, user=charlie).role == "owner"
    assert Provider.objects.filter(workspace=workspace, is_demo=True).count() == 1
    assert events("workspace.created")[0].workspace_id == workspace.id
    assert client.post(reverse("workspace-new"), {"name": ""}).status_code == 400


def test_new_workspace_can_be_turned_off(settings, charlie):
    settings.PLAYGROUND_ALLOW_NEW_WORKSPACES = False
    client = client_for(charlie)
    assert client.post(reverse("workspace-new"), {"name": "Nope"}).status_code == 403
    assert not Workspace.objects.filter(name="Nope").exists()
    assert "New workspace" not in client.get(reverse("account")).content.decode()


def test_workspace_settings(team, as_alice):
    ws = team["owner"].workspace
    url = reverse("workspace-settings-of", args=[ws.id])
    assert as_alice.get(reverse("workspace-settings")).status_code == 200
    assert as_alice.post(url, {"default_visibility": "private"}).status_code == 302
    ws.refresh_from_db()
    assert ws.default_visibility == "private"
    assert ws.public_share_links is False
    [event] = events("workspace.settings_changed")
    assert event.details["default_visibility"] == {"before": "shared", "after": "private"}
    assert as_alice.post(url, {"default_visibility": "everyone"}).status_code == 400
    assert client_for(team["member"].user).get(url).status_code == 403
    assert (
        client_for(team["admin"].user)
        .post(url, {"default_visibility": "shared", "public_share_links": "on"})
        .status_code
        == 302
    )


def test_rename_and_delete_are_the_owners(team, as_alice):
    ws = team["owner"].workspace
    run = Run.objects.create(workspace=ws, user=team["owner"].user, model="m")
    ann = client_for(team["admin"].user)
    assert ann.post(reverse("workspace-rename", args=[ws.id]), {"name": "Mine"}).status_code == 403
    assert as_alice.post(reverse("workspace-rename", args=[ws.id]), {"name": "Acme Labs"}).status_code == 302
    ws.refresh_from_db()
    assert ws.name == "Acme Labs"
    assert events("workspace.renamed")[0].details == {"before": "Acme"}
    assert ann.post(reverse("workspace-delete", args=[ws.id]), {"confirm": "Acme Labs"}).status_code == 403
    assert as_alice.post(reverse("workspace-delete", args=[ws.id]), {"confirm": "Acme"}).status_code == 400
    assert (
        as_alice.post(reverse("workspace-delete", args=[ws.id]), {"confirm": "Acme Labs"}).status_code == 302
    )
    assert not Workspace.objects.filter(id=ws.id).exists()
    run.refresh_from_db()
    assert run.workspace_id is None  # the ledger keeps it
    assert events("workspace.deleted")[0].target_name == "Acme Labs"


def test_account_page_and_password_change(alice, as_alice):
    html = as_alice.get(reverse("account")).content.decode()
    assert "Change password" in html
    assert reverse("password_change") in html
    response = as_alice.post(
        reverse("password_change"),
        {
            "old_password": "alice-password",
            "new_password1": "Zq8!longer-pass",
            "new_password2": "Zq8!longer-pass",
        },
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("Zq8!longer-pass")


def test_password_reset_by_email(alice):
    alice.email = "alice@example.com"
    alice.save()
    client = Client()
    assert "Forgot your password?" in client.get(reverse("login")).content.decode()
    assert client.post(reverse("password_reset"), {"email": "alice@example.com"}).status_code == 302
    [message] = mail.outbox
    assert message.to == ["alice@example.com"]
    link = next(line for line in message.body.splitlines() if "/accounts/reset/" in line)
    path = link.split("testserver", 1)[1]
    page = client.get(path, follow=True)
    assert page.status_code == 200
    assert "Set a new password" in page.content.decode()
    done = client.post(
        page.redirect_chain[-1][0], {"new_password1": "Zq8!new-pass", "new_password2": "Zq8!new-pass"}
    )
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("Zq8!new-pass")


def test_account_email_is_saved_and_a_bad_one_is_400(alice, as_alice):
    assert as_alice.post(reverse("account"), {"email": "nope"}).status_code == 400
    alice.refresh_from_db()
    assert alice.email == ""
    assert as_alice.post(reverse("account"), {"email": "alice@example.com"}).status_code == 302
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"

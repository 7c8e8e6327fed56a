"""Conversations in a team: who sees them (filters, search), visibility, the trash and
its purge, and Compare's columns as one entry of the list."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from playground.access import can_see
from playground.models import AuditEvent, Conversation, Membership, Message, Run, Workspace
from playground.transcripts import visible_conversations

pytestmark = pytest.mark.django_db
PRIVATE, SHARED = Conversation.Visibility.PRIVATE, Conversation.Visibility.SHARED


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def team(workspace, alice, bob):
    """alice owns Acme; bob and dana are members; vic is a viewer."""
    dana = User.objects.create_user("dana", password="x")
    Membership.objects.create(workspace=workspace, user=dana)
    vic = User.objects.create_user("vic", password="x")
    Membership.objects.create(workspace=workspace, user=vic, role=Membership.Role.VIEWER)
    return {"alice": alice, "bob": bob, "dana": dana, "vic": vic}


def ids(response):
    assert response.status_code == 200, response.content
    return [c["id"] for c in response.json()["conversations"]]


def make(workspace, creator, title, visibility=SHARED, **fields):
    return Conversation.objects.create(
        workspace=workspace, creator=creator, title=title, visibility=visibility, **fields
    )


def test_filters_show_only_what_the_policy_lets_each_role_see(workspace, team):
    bob_private = make(workspace, team["bob"], "bob private", PRIVATE)
    bob_shared = make(workspace, team["bob"], "bob shared")
    dana_private = make(workspace, team["dana"], "dana private", PRIVATE)
    trashed = make(workspace, team["bob"], "gone", deleted_at=timezone.now())
    as_dana, as_alice = client_for(team["dana"]), client_for(team["alice"])

    assert set(ids(as_dana.get("/api/conversations/?filter=all"))) == {bob_shared.id, dana_private.id}
    assert ids(as_dana.get("/api/conversations/?filter=shared")) == [bob_shared.id]
    assert ids(as_dana.get("/api/conversations/?filter=mine")) == [dana_private.id]
    assert set(ids(as_dana.get("/api/conversations/"))) == {bob_shared.id, dana_private.id}
    # Owners and admins see private ones too (for audit); nobody sees the trash in the list.
    everything = {bob_private.id, bob_shared.id, dana_private.id}
    assert set(ids(as_alice.get("/api/conversations/?filter=all"))) == everything
    assert ids(as_alice.get("/api/conversations/?filter=mine")) == []
    assert trashed.id not in ids(as_alice.get("/api/conversations/?filter=all"))
    # The query is can_see, row for row, for every role.
    for user in team.values():
        role = workspace.role_of(user)
        seen = set(visible_conversations(user, role, workspace).values_list("id", flat=True))
        for conv in Conversation.objects.filter(deleted_at=None):
            conv.member_role = role
            assert (conv.id in seen) == can_see(user, conv), (user, conv)


def test_each_entry_shows_its_creator_and_the_sort_is_by_last_activity(workspace, team):
    old = make(workspace, team["bob"], "old")
    new = make(workspace, team["bob"], "new")
    Conversation.objects.filter(id=old.id).update(updated_at=timezone.now() + timedelta(minutes=5))
    data = client_for(team["dana"]).get("/api/conversations/").json()["conversations"]
    assert [c["id"] for c in data] == [old.id, new.id]
    assert data[0]["creator"] == "bob"
    assert data[0]["visibility"] == "shared"
    assert data[0]["updated_at"]
    by_created = ids(client_for(team["dana"]).get("/api/conversations/?sort=created"))
    assert by_created == [new.id, old.id]


@pytest.mark.parametrize("query", ["filter=everyone", "sort=title"])
def test_an_unknown_filter_or_sort_is_a_400_naming_the_field(team, query):
    response = client_for(team["bob"]).get(f"/api/conversations/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["fields"]


def test_search_finds_only_what_the_user_may_see(workspace, team):
    private = make(workspace, team["bob"], "untitled", PRIVATE)
    Message.objects.create(conversation=private, position=1, role="user", content="the secret plan")
    shared = make(workspace, team["bob"], "plan shared")
    trashed = make(workspace, team["dana"], "plan in the trash", deleted_at=timezone.now())
    assert ids(client_for(team["dana"]).get("/api/conversations/?q=plan")) == [shared.id]
    assert set(ids(client_for(team["alice"]).get("/api/conversations/?q=plan"))) == {private.id, shared.id}
    assert trashed.id not in ids(client_for(team["dana"]).get("/api/conversations/?q=plan&filter=mine"))


def test_new_and_imported_conversations_take_the_workspace_default(workspace, team):
    as_bob = client_for(team["bob"])
    workspace.default_visibility = "private"
    workspace.save()
    created = as_bob.post("/api/conversations/", {"title": "t"}, content_type="application/json").json()
    assert created["visibility"] == "private"
    imported = as_bob.post(
        "/api/conversations/import/",
        {"messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
    )
    assert imported.status_code == 201, imported.content
    assert Conversation.objects.get(id=imported.json()["conversation"]["id"]).visibility == "private"
    pasted = as_bob.post(
        "/api/import/",
        {"text": '{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'},
        content_type="application/json",
    )
    assert pasted.status_code == 201, pasted.content
    assert Conversation.objects.get(id=pasted.json()["conversation"]["id"]).visibility == "private"
    workspace.default_visibility = "shared"
    workspace.save()
    created = as_bob.post("/api/conversations/", {"title": "t"}, content_type="application/json").json()
    assert created["visibility"] == "shared"


def test_visibility_is_changed_by_whoever_may_write_it(workspace, team):
    conv = make(workspace, team["bob"], "bob's")
    url = f"/api/conversations/{conv.id}/"
    dana = client_for(team["dana"])
    refused = dana.patch(url, {"visibility": "private"}, content_type="application/json")
    assert refused.status_code == 403
    assert "creator" in refused.json()["error"]
    reading = dana.get(url).json()
    assert reading["may_write"] is False
    assert "creator" in reading["refusal"]
    assert client_for(team["bob"]).get(url).json()["may_write"] is True
    bad = client_for(team["bob"]).patch(url, {"visibility": "team"}, content_type="application/json")
    assert bad.status_code == 400
    assert "visibility" in bad.json()["fields"]
    ok = client_for(team["bob"]).patch(url, {"visibility": "private"}, content_type="application/json")
    assert ok.status_code == 200
    assert ok.json()["visibility"] == "private"
    assert AuditEvent.objects.filter(
        action="conversation.visibility_changed", target_id=str(conv.id)
    ).exists()
    # Now private: dana no longer sees it at all, alice (owner) still changes it.
    assert dana.get(url).status_code == 404
    back = client_for(team["alice"]).patch(url, {"visibility": "shared"}, content_type="application/json")
    assert back.status_code == 200
    assert dana.post(f"{url}fork/", {"message": 0}, content_type="application/json").status_code == 400


def test_teammates_fork_but_do_not_rename_or_delete(workspace, team):
    conv = make(workspace, team["bob"], "bob's")
    message = Message.objects.create(conversation=conv, position=1, role="user", content="hi")
    dana, vic = client_for(team["dana"]), client_for(team["vic"])
    url = f"/api/conversations/{conv.id}/"
    assert dana.patch(url, {"title": "mine now"}, content_type="application/json").status_code == 403
    assert dana.delete(url).status_code == 403
    assert vic.delete(url).status_code == 403
    for client in (dana, vic):
        fork = client.post(f"{url}fork/", {"message": message.id}, content_type="application/json")
        assert fork.status_code == 201
        assert fork.json()["visibility"] == "private"
    conv.refresh_from_db()
    assert conv.title == "bob's"
    assert conv.deleted_at is None


def test_delete_moves_to_the_trash_and_restore_brings_it_back(workspace, team):
    conv = make(workspace, team["bob"], "bob's")
    url = f"/api/conversations/{conv.id}/"
    bob, dana, alice = client_for(team["bob"]), client_for(team["dana"]), client_for(team["alice"])
    assert bob.delete(url).json() == {"deleted": conv.id}
    conv.refresh_from_db()
    assert conv.deleted_at is not None
    assert conv.deleted_by == team["bob"]
    assert AuditEvent.objects.filter(action="conversation.deleted", target_id=str(conv.id)).count() == 1
    # A 404 everywhere; only its creator and the owner see it in the trash.
    for client in (bob, dana, alice):
        assert client.get(url).status_code == 404
        assert client.get(f"/api/conversations/{conv.id}/export.json").status_code == 404
    assert ids(bob.get("/api/conversations/?filter=trash")) == [conv.id]
    assert ids(alice.get("/api/conversations/?filter=trash")) == [conv.id]
    assert ids(dana.get("/api/conversations/?filter=trash")) == []
    assert ids(client_for(team["vic"]).get("/api/conversations/?filter=trash")) == []
    # A teammate may not restore it; its creator may.
    assert dana.post(f"{url}restore/").status_code == 403
    assert client_for(team["vic"]).post(f"{url}restore/").status_code == 403
    assert bob.post(f"{url}restore/").status_code == 200
    assert bob.post(f"{url}restore/").status_code == 404  # no longer in the trash
    assert AuditEvent.objects.filter(action="conversation.restored", target_id=str(conv.id)).count() == 1
    assert bob.get(url).status_code == 200
    assert conv.id in ids(dana.get("/api/conversations/"))
    # The owner restores anyone's; a private one of bob's is a 404 to dana even in the trash.
    private = make(workspace, team["bob"], "p", PRIVATE, deleted_at=timezone.now())
    assert dana.post(f"/api/conversations/{private.id}/restore/").status_code == 404
    assert alice.post(f"/api/conversations/{private.id}/restore/").status_code == 200


def test_outsiders_cannot_restore(workspace, team, charlie):
    conv = make(workspace, team["bob"], "bob's", deleted_at=timezone.now())
    assert client_for(charlie).post(f"/api/conversations/{conv.id}/restore/").status_code == 404
    assert ids(client_for(charlie).get("/api/conversations/?filter=trash")) == []


def test_the_trash_is_purged_after_its_days_and_the_ledger_keeps_the_runs(workspace, team, settings):
    settings.PLAYGROUND_TRASH_DAYS = 30
    old = make(
        workspace, team["bob"], "renamed since the run", deleted_at=timezone.now() - timedelta(days=31)
    )
    recent = make(workspace, team["bob"], "recent", deleted_at=timezone.now() - timedelta(days=29))
    run = Run.objects.create(
        conversation=old, conversation_title="first title", workspace=workspace, model="m"
    )
    assert ids(client_for(team["bob"]).get("/api/conversations/?filter=trash")) == [recent.id]  # lazy purge
    assert not Conversation.objects.filter(id=old.id).exists()
    run.refresh_from_db()
    assert run.conversation_id is None
    assert run.conversation_title == "renamed since the run"
    # The command purges every workspace's.
    Conversation.objects.filter(id=recent.id).update(deleted_at=timezone.now() - timedelta(days=40))
    other = Workspace.objects.create(name="Other2", slug="other2")
    elsewhere = make(other, team["bob"], "x", deleted_at=timezone.now() - timedelta(days=40))
    kept = make(workspace, team["bob"], "not deleted")
    call_command("purge_trash", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert not Conversation.objects.filter(id__in=[recent.id, elsewhere.id]).exists()
    assert Conversation.objects.filter(id=kept.id).exists()
    assert Run.objects.filter(id=run.id).exists()


def test_compare_columns_are_one_entry(workspace, team):
    bob = client_for(team["bob"])
    # Created at once, the columns' ids need not follow their numbers.
    columns = {
        n: bob.post(
            "/api/conversations/",
            {"title": f"Compare: m #{n}", "comparison": "3f2a-key"},
            content_type="application/json",
        ).json()["id"]
        for n in (2, 3, 1)
    }
    single = make(workspace, team["bob"], "single")
    entries = client_for(team["dana"]).get("/api/conversations/").json()["conversations"]
    assert [e["id"] for e in entries if e.get("kind") != "comparison"] == [single.id]
    (group,) = [e for e in entries if e.get("kind") == "comparison"]
    assert group["columns"] == [columns[1], columns[2], columns[3]]
    assert group["column_titles"] == ["Compare: m #1", "Compare: m #2", "Compare: m #3"]
    assert group["title"] == "Comparison: Compare: m #1 (3 columns)"
    bad = bob.post("/api/conversations/", {"comparison": "x" * 37}, content_type="application/json")
    assert bad.status_code == 400
    assert "comparison" in bad.json()["fields"]
    assert Conversation.objects.filter(workspace=workspace).count() == 4


@pytest.mark.django_db(transaction=True)
async def test_making_it_private_closes_the_teammates_open_sockets_at_once(alice, bob, conversation):
    from asgiref.sync import sync_to_async

    from tests.test_access import closed_with
    from tests.test_relay import post, session_cookie, watch

    alice_cookie, bob_cookie = (
        await sync_to_async(session_cookie)(alice),
        await sync_to_async(session_cookie)(bob),
    )
    theirs, hers = await watch(bob_cookie, conversation), await watch(alice_cookie, conversation)
    url = f"/api/conversations/{conversation.id}/"
    status, _ = await post(alice_cookie, url, {"visibility": "private"}, method="PATCH")
    assert status == 200
    assert await closed_with(theirs) == 4403
    changed = await hers.receive_json_from(timeout=5)
    while changed["type"] == "presence":  # who else is viewing: bob, then nobody
        changed = await hers.receive_json_from(timeout=5)
    assert changed["type"] == "conversation.changed"
    while not await hers.receive_nothing(timeout=0.5):  # the creator keeps watching
        assert (await hers.receive_json_from(timeout=1))["type"] == "presence"
    await hers.disconnect()

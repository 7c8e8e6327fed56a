"""Issue 15, section 5: one person cannot take the server, and nothing erases the ledger.

In one process here; across two Daphne processes in test_fair_share_scaleout.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client, RequestFactory
from django.utils import timezone

from playground import relay
from playground.admin import RunAdmin
from playground.models import Conversation, Membership, Message, Provider, Run, Workspace
from playground.transcripts import purge_trash
from playground.views import runs as views


def member(workspace: Workspace, name: str, role: str = Membership.Role.MEMBER) -> User:
    """A user with exactly one membership, given explicitly."""
    user = User.objects.create_user(name, password=f"{name}-password")
    Membership.objects.filter(user=user).delete()
    Membership.objects.create(workspace=workspace, user=user, role=role)
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def body(provider: Provider, message: str = "hi") -> bytes:
    return json.dumps({"provider": provider.id, "model": "m", "message": message, "params": {}}).encode()


DEMO = relay.Target("http://127.0.0.1:1/demo/v1", "", {})


def submit(user: User, conversation: Conversation, provider: Provider, message: str = "hi") -> Run:
    """Store a submission as the view does (without starting the relay)."""
    run, _, slot, _, _ = views.prepare_run(user, conversation.id, body(provider, message), DEMO)
    slot.release()
    return run


def active_run(user: User, conversation: Conversation) -> Run:
    return Run.objects.create(
        conversation=conversation,
        workspace_id=conversation.workspace_id,
        user=user,
        provider_name="Fake",
        model="m",
        status=Run.Status.STREAMING,
    )


# ---------------------------------------------------------------------------- caps per user and workspace


def test_stream_caps_per_user_and_per_workspace_answer_429_naming_the_cap(workspace, provider, settings):
    settings.PLAYGROUND_MAX_STREAMS_PER_USER = 2
    settings.PLAYGROUND_MAX_STREAMS_PER_WORKSPACE = 3
    dana, erin = member(workspace, "dana"), member(workspace, "erin")
    for _ in range(2):
        active_run(dana, Conversation.objects.create(workspace=workspace, creator=dana))
    mine = Conversation.objects.create(workspace=workspace, creator=dana)
    path = f"/api/conversations/{mine.id}/runs/"
    response = logged_in(dana).post(path, body(provider), content_type="application/json")
    assert response.status_code == 429
    assert response.json()["cap"] == "user"
    assert (response.json()["active"], response.json()["limit"]) == (2, 2)
    assert "user limit is 2" in response.json()["error"]
    assert not Message.objects.filter(conversation=mine).exists()

    active_run(erin, Conversation.objects.create(workspace=workspace, creator=erin))
    theirs = Conversation.objects.create(workspace=workspace, creator=erin)
    response = logged_in(erin).post(
        f"/api/conversations/{theirs.id}/runs/", body(provider), content_type="application/json"
    )
    assert response.status_code == 429
    refusal = response.json()
    assert (refusal["cap"], refusal["active"], refusal["limit"]) == ("workspace", 3, 3)

    # Another workspace's user is not affected.
    other = Workspace.objects.create(name="Other", slug="other")
    frank = member(other, "frank")
    their_provider = Provider(workspace=other, name="Fake", base_url=provider.base_url)
    their_provider.set_api_key("sk-other")
    their_provider.save()
    with transaction.atomic():
        run = submit(frank, Conversation.objects.create(workspace=other, creator=frank), their_provider)
    assert run.status == Run.Status.QUEUED

    # 0: no cap.
    settings.PLAYGROUND_MAX_STREAMS_PER_USER = 0
    settings.PLAYGROUND_MAX_STREAMS_PER_WORKSPACE = 0
    assert submit(dana, mine, provider).status == Run.Status.QUEUED


# ---------------------------------------------------------------------------- one run per conversation


def test_a_second_run_in_a_streaming_conversation_is_refused_with_409(workspace, provider):
    dana = member(workspace, "dana")
    conversation = Conversation.objects.create(workspace=workspace, creator=dana)
    active_run(dana, conversation)
    response = logged_in(dana).post(
        f"/api/conversations/{conversation.id}/runs/", body(provider), content_type="application/json"
    )
    assert response.status_code == 409
    assert response.json()["error"] == "This conversation is still answering; stop it or wait."
    assert not Message.objects.filter(conversation=conversation).exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_submissions_to_one_conversation_one_is_refused(workspace, provider):
    """Two tabs send at once: the conversation's row lock orders them, and the second
    finds the first's run active (PostgreSQL: row locks; SQLite locks the whole database)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    # Two tabs of its creator (teammates may not send in it: access.POLICY).
    dana = member(workspace, "dana")
    conversation = Conversation.objects.create(workspace=workspace, creator=dana)
    start = threading.Barrier(2)

    def send(user: User, message: str) -> str:
        start.wait()
        try:
            with transaction.atomic():
                submit(user, conversation, provider, message)
            return "stored"
        except views.Refused as exc:
            return str(exc.status)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(send, [dana, dana], ["from tab 1", "from tab 2"]))
    assert outcomes == ["409", "stored"]
    assert [m.role for m in Message.objects.filter(conversation=conversation)] == ["user"]
    assert Run.objects.filter(conversation=conversation).count() == 1


# ---------------------------------------------------------------------------- the ledger


def test_runs_outlive_their_conversation_provider_user_and_workspace_keeping_the_names(workspace, provider):
    dana = member(workspace, "dana")
    conversation = Conversation.objects.create(workspace=workspace, creator=dana)
    with transaction.atomic():
        run = submit(dana, conversation, provider, "What is a tide?")
    run.refresh_from_db()
    names = (run.conversation_title, run.workspace_name, run.provider_name, run.username)
    assert names == ("What is a tide?", "Acme", "Fake", "dana")

    response = logged_in(dana).delete(f"/api/conversations/{conversation.id}/")
    assert response.status_code == 200
    purge_trash(now=timezone.now() + timedelta(days=settings.PLAYGROUND_TRASH_DAYS + 1))
    provider.delete()
    dana.delete()
    run.refresh_from_db()
    assert (run.conversation_id, run.provider_id, run.user_id) == (None, None, None)
    assert (run.conversation_title, run.workspace_name, run.provider_name, run.username) == names
    assert run.to_dict()["user"] == "dana"
    workspace.delete()
    run.refresh_from_db()
    assert run.workspace_id is None
    assert run.workspace_name == "Acme"


def test_only_the_creator_or_an_owner_or_admin_may_rename_or_delete_a_conversation(workspace):
    dana, erin = member(workspace, "dana"), member(workspace, "erin")
    boss = member(workspace, "boss", Membership.Role.ADMIN)
    conversation = Conversation.objects.create(workspace=workspace, creator=dana, title="Dana's")
    path = f"/api/conversations/{conversation.id}/"
    rename = json.dumps({"title": "Erin's now"})
    as_erin = logged_in(erin)
    assert as_erin.patch(path, rename, content_type="application/json").status_code == 403
    assert as_erin.delete(path).status_code == 403
    assert "creator" in as_erin.delete(path).json()["error"]
    assert Conversation.objects.get(id=conversation.id).title == "Dana's"
    assert as_erin.get(path).status_code == 200  # still readable by every member
    assert logged_in(dana).patch(path, rename, content_type="application/json").status_code == 200
    assert logged_in(boss).delete(path).status_code == 200
    assert Conversation.objects.get(id=conversation.id).deleted_by == boss  # in the trash
    assert as_erin.get(path).status_code == 404


def test_the_run_admin_cannot_delete_runs(admin_user):
    request = RequestFactory().get("/admin/playground/run/")
    request.user = admin_user
    run_admin = RunAdmin(Run, admin.site)
    assert run_admin.has_delete_permission(request) is False
    assert "delete_selected" not in run_admin.get_actions(request)

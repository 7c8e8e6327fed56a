"""Pages and the JSON API: login, conversations, membership, validation."""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref import sync
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core import signals
from django.db import OperationalError, close_old_connections, connection, reset_queries, transaction
from django.db.transaction import TransactionManagementError
from django.http import HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import path

from playground import relay
from playground.models import Conversation, Membership, Message, Provider
from playground.views import runs as views
from tests.fastpaths import needs


@pytest.fixture
def conversation(alice, workspace):
    return Conversation.objects.create(workspace=workspace, creator=alice, title="Tides")


def test_the_page_needs_a_login(db):
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_the_login_page_logs_in(alice):
    client = Client()
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_the_page_has_the_named_controls(as_alice):
    html = as_alice.get("/").content.decode()
    for control in (
        '<label for="provider">Provider</label>',
        '<label for="model">Model</label>',
        '<label for="system">System prompt</label>',
        '<label for="message" class="visually-hidden">Message</label>',
        'role="region" aria-label="Conversation"',
        '<label for="param-temperature">temperature</label>',
        '<label for="param-max_tokens">max_tokens</label>',
        '<label for="param-stop">stop</label>',
        '<label for="param-seed">seed</label>',
        '<label for="param-stream">stream</label>',
    ):
        assert control in html


def test_the_api_answers_401_without_a_login(db):
    response = Client().get("/api/conversations/")
    assert response.status_code == 401
    assert response.json() == {"error": "Log in first."}


def test_submitting_a_run_answers_401_without_a_login(db):
    response = Client().post("/api/conversations/1/runs/", {}, content_type="application/json")
    assert response.status_code == 401
    assert response.json() == {"error": "Log in first."}


def test_members_create_rename_and_delete_conversations(as_alice):
    created = as_alice.post("/api/conversations/", {}, content_type="application/json").json()
    assert created["title"] == "New conversation"
    renamed = as_alice.patch(
        f"/api/conversations/{created['id']}/", {"title": "Moon"}, content_type="application/json"
    )
    assert renamed.json()["title"] == "Moon"
    assert as_alice.delete(f"/api/conversations/{created['id']}/").json() == {"deleted": created["id"]}
    assert not Conversation.objects.filter(deleted_at=None).exists()  # in the trash


def test_a_rename_to_nothing_is_refused(as_alice, conversation):
    response = as_alice.patch(
        f"/api/conversations/{conversation.id}/", {"title": "  "}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {"title": "cannot be empty"}


def test_teammates_share_conversations(bob, conversation):
    client = Client()
    client.force_login(bob)
    titles = [c["title"] for c in client.get("/api/conversations/").json()["conversations"]]
    assert titles == ["Tides"]


def test_outsiders_cannot_read_a_conversation(charlie, conversation):
    client = Client()
    client.force_login(charlie)
    assert client.get(f"/api/conversations/{conversation.id}/").status_code == 404
    assert client.get(f"/c/{conversation.id}/").status_code == 404


def test_viewers_cannot_delete(bob, conversation):
    Membership.objects.filter(user=bob).update(role=Membership.Role.VIEWER)
    client = Client()
    client.force_login(bob)
    assert client.delete(f"/api/conversations/{conversation.id}/").status_code == 403
    assert Conversation.objects.filter(id=conversation.id).exists()


def test_the_transcript_lists_messages_and_runs(as_alice, conversation):
    Message.objects.create(conversation=conversation, position=1, role="user", content="hi")
    data = as_alice.get(f"/api/conversations/{conversation.id}/").json()
    assert [(m["role"], m["content"]) for m in data["messages"]] == [("user", "hi")]
    assert data["runs"] == []


def test_a_submission_with_bad_fields_names_each_field(as_alice, conversation, provider):
    body = {
        "provider": provider.id,
        "model": "",
        "message": "hi",
        "params": {"n": 0, "stop": ["a", "b", "c", "d", "e"], "logit_bias": {"50256": -101}, "wat": 1},
    }
    response = as_alice.post(
        f"/api/conversations/{conversation.id}/runs/", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {
        "model": "choose or type a model",
        "n": "must be between 1 and 128",
        "stop": "can hold at most 4 sequences",
        "logit_bias": "bias for token 50256 must be between -100 and 100",
        "wat": "is not a known parameter; put it in the extra body instead",
    }


def test_a_provider_of_another_workspace_cannot_be_used(as_alice, conversation, charlie):
    other = Provider.objects.create(
        workspace=charlie.memberships.get().workspace, name="Theirs", base_url="http://x/v1"
    )
    body = {"provider": other.id, "model": "m", "message": "hi"}
    response = as_alice.post(
        f"/api/conversations/{conversation.id}/runs/", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {"provider": "is not an enabled provider of this workspace"}


def test_models_come_from_the_provider(as_alice, provider):
    assert as_alice.get(f"/api/providers/{provider.id}/models/").json() == {
        "models": ["fake-large", "fake-model"]
    }


def test_an_unreachable_model_list_says_why(as_alice, workspace):
    dead = Provider(workspace=workspace, name="Dead", base_url="http://127.0.0.1:9/v1")
    dead.set_api_key("sk-dead")
    dead.save()
    data = as_alice.get(f"/api/providers/{dead.id}/models/").json()
    assert data == {"models": [], "error": "Could not connect to 127.0.0.1:9: connection refused."}


def test_a_submission_reads_the_conversation_and_its_messages_once(alice, conversation, provider):
    """Each query is a wait for the GIL while the loop relays other answers: the checks and
    the new turn take ten (three lock the workspace and the user and count their active runs
    for the caps), the texts of the messages sent two (those already stored, then the new
    ones), and the history sent upstream is the stored one plus the turn."""
    Message.objects.create(conversation=conversation, position=1, role="user", content="earlier")
    Message.objects.create(conversation=conversation, position=2, role="assistant", content="reply")
    body = {"provider": provider.id, "model": "m", "message": "now", "system": "Be brief.", "params": {}}
    demo = relay.Target("http://127.0.0.1:1/demo/v1", "", {})
    with CaptureQueriesContext(connection) as queries:
        run, _, slot, messages, title = views.prepare_run(
            alice, conversation.id, json.dumps(body).encode(), demo
        )
    slot.release()
    statements = [q["sql"].split()[0] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert statements == [*["SELECT"] * 6, "INSERT", "INSERT", "SELECT", "INSERT", "INSERT", "UPDATE"]
    assert [(m["role"], m["content"], m["position"]) for m in messages] == [
        ("system", "Be brief.", 0),
        ("user", "now", 3),
    ]
    assert run.position == 4
    assert title is None
    assert [(m["role"], m["content"]) for m in run.request_body["messages"]] == [
        ("system", "Be brief."),
        ("user", "earlier"),
        ("assistant", "reply"),
        ("user", "now"),
    ]
    assert run.request_body["messages"] == Conversation.objects.get(id=conversation.id).history()


def test_a_conversation_comes_with_the_callers_role_in_its_workspace(alice, bob, charlie, conversation):
    Membership.objects.filter(user=bob).update(role=Membership.Role.VIEWER)
    roles = {
        user.username: Conversation.objects.for_member(user.id, conversation.id).member_role
        for user in (alice, bob, charlie)
    }
    assert roles == {"alice": "owner", "bob": "viewer", "charlie": None}
    found = Conversation.objects.for_member(alice.id, conversation.id)
    assert (found.title, found.workspace_id, found.created_at) == (
        "Tides",
        conversation.workspace_id,
        conversation.created_at,
    )
    assert Conversation.objects.for_member(alice.id, conversation.id + 1000) is None


@pytest.mark.django_db(transaction=True)
def test_a_locked_lookup_locks_the_conversations_row(alice, conversation):
    """One submission at a time per conversation: on PostgreSQL the row stays locked until
    the commit (SQLite's transactions here take the database's write lock as they begin)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite locks the whole database")
    with pytest.raises(TransactionManagementError):
        Conversation.objects.for_member(alice.id, conversation.id, lock=True)

    def lock_from_another_connection() -> str:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                table = Conversation._meta.db_table
                cursor.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE NOWAIT", [conversation.id])
            return "free"
        except OperationalError:
            return "locked"
        finally:
            connection.close()

    with transaction.atomic():
        Conversation.objects.for_member(alice.id, conversation.id, lock=True)
        with ThreadPoolExecutor(1) as pool:  # a thread of its own: a connection of its own
            assert pool.submit(lock_from_another_connection).result() == "locked"
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(lock_from_another_connection).result() == "free"


def test_messages_read_in_order_as_the_orm_reads_them(conversation):
    """`ordered_messages` is SQL: each field still comes back as its Python type."""
    parts = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    Message.objects.create(
        conversation=conversation, position=2, role="assistant", content="", tool_calls=calls
    )
    Message.objects.create(conversation=conversation, position=1, role="user", content=parts)
    Message.objects.create(
        conversation=conversation, position=2, role="assistant", content="b", choice_index=1, in_history=False
    )
    fields = [f.attname for f in Message._meta.concrete_fields]
    read = [[getattr(m, name) for name in fields] for m in conversation.ordered_messages()]
    assert read == [[getattr(m, name) for name in fields] for m in conversation.messages.all()]
    assert [(m.position, m.choice_index) for m in conversation.ordered_messages()] == [(1, 0), (2, 0), (2, 1)]
    assert read[0][fields.index("content")] == parts


def test_a_disabled_provider_cannot_be_used(as_alice, conversation, provider):
    Provider.objects.filter(id=provider.id).update(enabled=False)
    body = {"provider": provider.id, "model": "m", "message": "hi"}
    response = as_alice.post(
        f"/api/conversations/{conversation.id}/runs/", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {"provider": "is not an enabled provider of this workspace"}


@pytest.mark.parametrize(("before", "after", "stored"), [("Old.", "New.", ["New."]), ("Old.", "", [])])
def test_a_submission_edits_or_drops_the_system_prompt(alice, conversation, provider, before, after, stored):
    Message.objects.create(conversation=conversation, position=0, role="system", content=before)
    body = {"provider": provider.id, "model": "m", "message": "hi", "system": after, "params": {}}
    demo = relay.Target("http://127.0.0.1:1/demo/v1", "", {})
    run, _, slot, _, _ = views.prepare_run(alice, conversation.id, json.dumps(body).encode(), demo)
    slot.release()
    assert list(conversation.messages.filter(role="system").values_list("content", flat=True)) == stored
    assert run.request_body["messages"][0] == (
        {"role": "system", "content": after} if after else {"role": "user", "content": "hi"}
    )


def test_a_request_reads_its_session_from_the_cache(as_alice):
    as_alice.get("/api/conversations/")
    with CaptureQueriesContext(connection) as queries:
        assert as_alice.get("/api/conversations/").status_code == 200
    assert not [q["sql"] for q in queries if "django_session" in q["sql"]]
    assert [q["sql"] for q in queries if "auth_user" in q["sql"]]  # the user still comes from the database


@needs("request_threads")
@pytest.mark.django_db(transaction=True)
async def test_a_request_crosses_between_the_loop_and_a_thread_a_few_times(alice, workspace, monkeypatch):
    """Each crossing waits for the GIL while the loop relays answers. Django's stack, each
    middleware async and its hooks run through sync_to_async, crossed 16 times for this
    GET; playground.server.request_threads runs the synchronous middleware and the view in one trip."""
    from channels.testing import HttpCommunicator

    from playground.asgi import application

    conv = await Conversation.objects.acreate(workspace=workspace, creator=alice, title="x")
    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    crossings = []
    to_thread, to_loop = sync.SyncToAsync.__call__, sync.AsyncToSync.__call__

    async def counted_to_thread(self, *args, **kwargs):
        crossings.append(getattr(self.func, "__qualname__", "thread"))
        return await to_thread(self, *args, **kwargs)

    def counted_to_loop(self, *args, **kwargs):
        crossings.append(getattr(self.awaitable, "__qualname__", "loop"))
        return to_loop(self, *args, **kwargs)

    # As in the server (Django's test Client and CaptureQueriesContext connect these again).
    signals.request_started.disconnect(close_old_connections)
    signals.request_started.disconnect(reset_queries)
    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(sync.AsyncToSync, "__call__", counted_to_loop)
    path = f"/api/conversations/{conv.id}/"
    headers = [(b"host", b"localhost"), (b"cookie", cookie)]
    communicator = HttpCommunicator(application, "GET", path, headers=headers)
    response = await communicator.get_response(timeout=10)
    await communicator.wait(timeout=10)  # the response's close, after its body went out
    monkeypatch.undo()
    assert response["status"] == 200
    assert json.loads(response["body"])["title"] == "x"
    # The middleware with the view inside, and the response's close (request_finished
    # checks the thread's database connection): Django's own handler took 16.
    assert 0 < len(crossings) <= 2, crossings


@needs("request_threads")
@pytest.mark.django_db(transaction=True)
async def test_requests_reuse_a_thread_and_its_database_connection(alice, workspace):
    """Django's handler starts a thread per request (and one more to join it), and each
    thread opens a database connection; playground.server.request_threads pools the threads, which
    keep their connection (CONN_MAX_AGE)."""
    from channels.testing import HttpCommunicator

    from playground.asgi import application

    conv = await Conversation.objects.acreate(workspace=workspace, creator=alice, title="x")
    client = Client()
    await sync_to_async(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"host", b"localhost"), (b"cookie", cookie)]
    seen = []

    def note(**kwargs):  # after Django's close_old_connections, on the request's thread
        seen.append((threading.current_thread(), connection.connection))

    signals.request_finished.connect(note)
    try:
        for _ in range(3):
            path = f"/api/conversations/{conv.id}/"
            communicator = HttpCommunicator(application, "GET", path, headers=headers)
            assert (await communicator.get_response(timeout=10))["status"] == 200
            await communicator.wait(timeout=10)  # the response's close, after its body went out
    finally:
        signals.request_finished.disconnect(note)
    threads, connections = zip(*seen, strict=True)
    assert len(seen) == 3
    assert connections[0] is not None
    assert all(t is threads[0] for t in threads)
    assert all(c is connections[0] for c in connections)


def slow_view(request):
    slow_view.started.set()
    slow_view.thread = threading.current_thread()
    slow_view.release.wait(10)
    return HttpResponse("late")


def thread_view(request):
    thread_view.threads.append(threading.current_thread())
    User.objects.exists()  # a query, for the DEBUG query log
    return HttpResponse("ok")


urlpatterns = [
    path("slow/", slow_view),
    path("fast/", lambda request: HttpResponse("ok")),
    path("thread/", thread_view),
]


@needs("request_threads")
@pytest.mark.django_db(transaction=True)
async def test_a_thread_left_running_a_view_is_not_given_to_the_next_request(settings):
    """When the server cancels a request (Daphne does, some seconds after its client left),
    the request ends while its view still runs: that thread must not take the next request,
    which would wait behind the view."""
    from channels.testing import HttpCommunicator

    from playground.server.request_threads import ASGIHandler

    settings.ROOT_URLCONF = __name__
    handler = ASGIHandler()
    slow_view.started, slow_view.release = threading.Event(), threading.Event()
    try:
        left = HttpCommunicator(handler, "GET", "/slow/", headers=[(b"host", b"localhost")])
        await left.send_input({"type": "http.request", "body": b""})
        assert await asyncio.to_thread(slow_view.started.wait, 10)
        left.future.cancel()
        await left.wait(timeout=10)
        assert handler.idle == []  # its thread still runs the view
        fast = HttpCommunicator(handler, "GET", "/fast/", headers=[(b"host", b"localhost")])
        response = await fast.get_response(timeout=10)
        assert response["status"] == 200
        assert response["body"] == b"ok"
        await fast.wait(timeout=10)
        assert len(handler.idle) == 1
        assert handler.idle[0].busy == 0
    finally:
        slow_view.release.set()
    await asyncio.to_thread(slow_view.thread.join, 10)
    assert not slow_view.thread.is_alive()  # the left thread ended once its view returned
    await asyncio.to_thread(handler.close_idle_threads)


@needs("request_threads")
@pytest.mark.django_db(transaction=True)
async def test_threads_left_idle_past_the_connection_age_end_with_their_connection(settings):
    """A burst leaves threads no request takes afterwards; each keeps a connection, which
    only its own next request would close once past CONN_MAX_AGE: they are pruned."""
    from channels.testing import HttpCommunicator

    from playground.server.request_threads import ASGIHandler

    settings.ROOT_URLCONF = __name__
    handler = ASGIHandler()
    handler.max_idle = 1.0
    thread_view.threads = []

    async def get() -> None:
        communicator = HttpCommunicator(handler, "GET", "/thread/", headers=[(b"host", b"localhost")])
        assert (await communicator.get_response(timeout=10))["status"] == 200
        await communicator.wait(timeout=10)

    async def until(condition, seconds: float = 5) -> bool:
        for _ in range(int(seconds / 0.02)):
            if condition():
                return True
            await asyncio.sleep(0.02)
        return False

    await asyncio.gather(get(), get(), get())
    burst = len(handler.idle)
    assert 1 <= burst <= 3
    await asyncio.sleep(0.5)
    await get()  # takes the burst's latest thread again
    assert len(handler.idle) == burst  # none gone before its second of idleness
    # The burst's other threads go a second after the burst; the last one a second after
    # the last request.
    assert await until(lambda: len(handler.idle) == 1)
    assert handler.idle[0].idle_since > asyncio.get_running_loop().time() - 1.0
    assert thread_view.threads[-1].is_alive()
    assert await until(lambda: handler.idle == [])
    for thread in thread_view.threads:
        await asyncio.to_thread(thread.join, 5)
        assert not thread.is_alive()


@needs("request_threads")
@pytest.mark.django_db(transaction=True)
async def test_a_pooled_thread_starts_each_request_with_an_empty_query_log(settings):
    """With DEBUG on, Django logs a connection's queries; a connection kept across requests
    would pile up 9,000 of them, whole conversations in the INSERTs."""
    from channels.testing import HttpCommunicator

    from playground.server.request_threads import ASGIHandler

    settings.ROOT_URLCONF = __name__
    settings.DEBUG = True
    handler = ASGIHandler()
    thread_view.threads = []
    for _ in range(2):
        communicator = HttpCommunicator(handler, "GET", "/thread/", headers=[(b"host", b"localhost")])
        assert (await communicator.get_response(timeout=10))["status"] == 200
        await communicator.wait(timeout=10)
    assert thread_view.threads[0] is thread_view.threads[1]
    logged = await asyncio.wrap_future(handler.idle[0].submit(lambda: len(connection.queries)))
    assert logged == 1  # the last request's query only
    await asyncio.to_thread(handler.close_idle_threads)

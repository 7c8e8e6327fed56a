"""Issue 17, the audit log: the page for owners and admins (site staff see everything),
its filters and pages, the streamed, formula-safe CSV export (itself recorded), login
failures and lockouts, read-only in the admin, and append-only all the way down."""

import csv
import datetime
import io

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from playground import audit
from playground.models import AuditEvent, Membership, Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def rows(html: str) -> int:
    return html.count("<tr data-action=")


@pytest.fixture
def events(workspace, alice, bob):
    audit.record("member.invited", actor=alice, workspace=workspace, target=bob, role="member")
    audit.record("provider.key_changed", actor=alice, workspace=workspace, target_name="Fake")
    audit.record(
        "member.role_changed", actor=bob, workspace=workspace, role={"before": "member", "after": "viewer"}
    )
    other = Workspace.objects.create(name="Elsewhere", slug="elsewhere")
    audit.record("provider.deleted", actor=bob, workspace=other, target_name="Hidden provider")
    audit.record("login.failed", username="mallory")
    audit.record("login.failed", username="bob")


def test_an_owner_reads_their_workspaces_log_and_nothing_else(as_alice, events):
    page = as_alice.get("/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'aria-label="Audit log"' in html
    assert rows(html) == 4
    assert "Login failed" in html  # bob's, a member's username; mallory's is no member's
    assert "Role changed" in html
    assert "role: member → viewer" in html
    assert "Provider key changed" in html
    assert "Hidden provider" not in html
    assert "mallory" not in html
    assert ">Audit log</a>" in html  # the top bar's link


def test_a_member_gets_a_403_in_words_and_no_link(bob, events):
    client = client_for(bob)
    page = client.get("/audit/")
    assert page.status_code == 403
    assert "Only owners and admins read the audit log." in page.content.decode()
    assert client.get("/audit/export.csv").status_code == 403
    assert ">Audit log</a>" not in client.get("/compare/").content.decode()
    assert not AuditEvent.objects.filter(action="export.downloaded").exists()


def test_logged_out_is_sent_to_log_in(db):
    answer = Client().get("/audit/")
    assert answer.status_code == 302
    assert answer["Location"].startswith("/accounts/login/")


def test_site_staff_see_every_workspace_and_events_of_none(events):
    staff = User.objects.create_user("root", password="x", is_staff=True)
    html = client_for(staff).get("/audit/").content.decode()
    assert rows(html) == 6
    assert "Hidden provider" in html
    assert "mallory" in html
    only = client_for(staff).get(f"/audit/?workspace={Workspace.objects.get(slug='elsewhere').id}")
    assert rows(only.content.decode()) == 1


def test_filters_who_what_and_when_travel_in_the_url(as_alice, events):
    assert rows(as_alice.get("/audit/?who=bob").content.decode()) == 2
    assert rows(as_alice.get("/audit/?what=member.invited").content.decode()) == 1
    AuditEvent.objects.create(
        workspace=Workspace.objects.get(slug="acme"),
        actor_name="alice",
        action="limits.changed",
        created_at=timezone.now() - datetime.timedelta(days=10),
    )
    past = (timezone.localdate() - datetime.timedelta(days=10)).isoformat()
    before = (timezone.localdate() - datetime.timedelta(days=9)).isoformat()
    assert rows(as_alice.get(f"/audit/?from={past}&to={past}").content.decode()) == 1
    assert rows(as_alice.get(f"/audit/?to={before}").content.decode()) == 1
    assert rows(as_alice.get(f"/audit/?from={before}").content.decode()) == 4
    html = as_alice.get("/audit/?who=bob&what=member.role_changed").content.decode()
    assert rows(html) == 1
    assert "who=bob" in html


def test_a_bad_date_is_a_400_naming_the_field(as_alice, events):
    answer = as_alice.get("/audit/?from=yesterday")
    assert answer.status_code == 400
    assert "From:" in answer.content.decode()
    assert as_alice.get("/audit/?from=2026-02-02&to=2026-01-01").status_code == 400
    assert as_alice.get("/audit/export.csv?to=nope").status_code == 400


def test_pages_are_newest_first(as_alice, workspace, alice):
    for n in range(55):
        audit.record("limits.changed", actor=alice, workspace=workspace, step=n)
    first = as_alice.get("/audit/").content.decode()
    assert rows(first) == 50
    assert "step: 54" in first
    assert "step: 4<" not in first
    second = as_alice.get("/audit/?page=2").content.decode()
    assert rows(second) == 5
    assert "step: 0<" in second
    assert "Page 2 of 2" in second


def test_export_streams_a_formula_safe_csv_and_is_recorded(as_alice, alice, workspace, events):
    audit.record(
        "provider.created", actor=alice, workspace=workspace, target_name="=HYPERLINK(1)", note="@SUM(1)"
    )
    answer = as_alice.get("/audit/export.csv?who=alice")
    assert answer.status_code == 200
    assert answer.streaming
    assert answer["Content-Type"].startswith("text/csv")
    assert "attachment" in answer["Content-Disposition"]
    table = list(csv.reader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert table[0][:3] == ["when", "who", "what"]
    body = table[1:]
    assert {row[1] for row in body} == {"alice"}
    assert len(body) == 3
    targets = [row[7] for row in body]
    assert "'=HYPERLINK(1)" in targets
    assert "=HYPERLINK(1)" not in targets
    for row in body:
        assert not row[7].startswith(("=", "+", "-", "@"))
        assert not row[8].startswith(("=", "+", "-", "@"))
    export = AuditEvent.objects.get(action="export.downloaded")
    assert export.actor == alice
    assert export.workspace == workspace
    assert export.details["filters"] == {"who": "alice"}


def test_csv_cells_are_quoted_only_when_a_spreadsheet_would_run_them():
    from playground.views.audit import cell

    assert [cell(v) for v in ["=1+1", "+1", "-1", "@a", "\tx", "ok", None, 5]] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@a",
        "'\tx",
        "ok",
        "",
        "5",
    ]


def test_login_failures_and_lockouts_are_recorded_without_the_password(db, settings, alice):
    settings.LOGIN_FAILURES_PER_USER = 2
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(2):
        client.post("/accounts/login/", {"username": "alice", "password": "wrong-guess-123"})
    failed = AuditEvent.objects.filter(action="login.failed")
    assert failed.count() == 2
    assert {(e.actor_name, e.ip, e.workspace_id) for e in failed} == {("alice", "203.0.113.9", None)}
    locked = AuditEvent.objects.get(action="login.locked_out")
    assert locked.actor_name == "alice"
    assert locked.details["locked"] == "username"
    assert locked.workspace is None
    assert client.post("/accounts/login/", {"username": "alice", "password": "x"}).status_code == 429
    assert AuditEvent.objects.filter(action="login.locked_out").count() == 1  # once per lock
    for event in AuditEvent.objects.all():
        assert "wrong-guess-123" not in str(event.details)
        assert "password" not in event.details


def test_the_log_is_append_only_one_by_one_and_in_bulk(workspace, alice, events):
    event = AuditEvent.objects.first()
    event.action = "nothing.happened"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    with pytest.raises(ValueError, match="append-only"):
        AuditEvent.objects.update(action="nothing.happened")
    with pytest.raises(ValueError, match="append-only"):
        AuditEvent.objects.filter(actor=alice).delete()
    with pytest.raises(ValueError, match="append-only"):
        AuditEvent.objects.all()._raw_delete(AuditEvent.objects.db)
    with pytest.raises(ValueError, match="append-only"):
        AuditEvent.objects.bulk_update([event], ["action"])
    assert AuditEvent.objects.filter(action="nothing.happened").count() == 0
    # What it names can still go: the line keeps its copied names.
    workspace.delete()
    alice.delete()
    assert AuditEvent.objects.filter(workspace_name="Acme", actor_name="alice", actor=None).count() == 2


def test_the_product_has_no_way_to_change_or_delete_an_event(as_alice, events):
    event = AuditEvent.objects.filter(action="member.invited").first()
    for method in ("post", "put", "patch", "delete"):
        answer = getattr(as_alice, method)(f"/audit/?id={event.id}")
        assert answer.status_code == 405
    assert AuditEvent.objects.filter(id=event.id, action="member.invited").exists()


def test_the_admin_shows_the_log_read_only_to_staff(events, alice):
    root = User.objects.create_superuser("root", password="x")
    admin = client_for(root)
    event = AuditEvent.objects.first()
    assert admin.get("/admin/playground/auditevent/").status_code == 200
    assert admin.get("/admin/playground/auditevent/add/").status_code == 403
    change = admin.get(f"/admin/playground/auditevent/{event.id}/change/")
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    post = admin.post(f"/admin/playground/auditevent/{event.id}/change/", {"action": "nothing.happened"})
    assert post.status_code == 403
    assert admin.get(f"/admin/playground/auditevent/{event.id}/delete/").status_code == 403
    assert AuditEvent.objects.get(id=event.id).action == event.action
    assert client_for(alice).get("/admin/playground/auditevent/").status_code == 302  # not staff


def test_the_nav_link_shows_for_the_workspace_the_user_works_in(db, workspace, alice):
    other = Workspace.objects.create(name="Side", slug="side")
    Membership.objects.create(workspace=other, user=alice, role=Membership.Role.MEMBER)
    client = client_for(alice)
    assert ">Audit log</a>" in client.get("/compare/").content.decode()
    assert ">Audit log</a>" not in client.get(f"/compare/?workspace={other.id}").content.decode()
    assert client.get("/audit/").status_code == 403  # the session now works in Side

"""Issue 17, roles: the README's roles table is the policy's, and the pages hand the
policy's refusals to the controls they disable (the browser side: test_browser_roles)."""

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from playground import access
from playground.management.commands import roles_table
from playground.models import Membership

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_holds_exactly_the_policys_roles_table():
    assert README.count(roles_table.START) == 1
    assert README.split(roles_table.START, 1)[0].rsplit("\n## ", 1)[1].startswith("Roles\n")
    assert roles_table.between_markers(README) == roles_table.markdown(), (
        "README.md's roles table is out of date: run `python manage.py roles_table --write README.md`"
    )


def table_cells(markdown: str) -> dict[str, dict[str, str]]:
    rows = [line.strip("|").split("|") for line in markdown.strip().splitlines()[2:]]
    return {
        cells[0].strip(" `"): dict(zip(access.ROLES, (c.strip() for c in cells[2:]), strict=True))
        for cells in rows
    }


def test_the_table_has_a_row_per_action_and_a_mark_per_role():
    cells = table_cells(roles_table.markdown())
    assert list(cells) == list(access.POLICY)
    for action, marks in cells.items():
        for role, mark in marks.items():
            assert mark == (roles_table.YES if access.allows(role, action) else roles_table.NO), (
                action,
                role,
            )


def test_a_policy_change_changes_the_table(monkeypatch):
    before = roles_table.markdown()
    changed = {**access.POLICY, "audit.read": access.Action(access.EVERYONE, "Read the | log", "")}
    monkeypatch.setattr(access, "POLICY", changed)
    after = roles_table.markdown()
    assert after != before
    assert "| `audit.read` | Read the \\| log | ✓ | ✓ | ✓ | ✓ |" in after


def test_the_command_prints_the_table_and_writes_it_between_the_markers(tmp_path):
    out = StringIO()
    call_command("roles_table", stdout=out)
    assert out.getvalue() == roles_table.markdown()
    target = tmp_path / "README.md"
    target.write_text(f"# Title\n\n{roles_table.START}\nstale\n{roles_table.END}\n\nAfter.\n")
    call_command("roles_table", "--write", str(target), stdout=StringIO())
    written = target.read_text()
    assert written.startswith("# Title\n\n")
    assert written.endswith(f"{roles_table.END}\n\nAfter.\n")
    assert roles_table.between_markers(written) == roles_table.markdown()


def test_the_command_refuses_a_file_without_the_markers(tmp_path):
    target = tmp_path / "README.md"
    target.write_text("# No markers\n")
    with pytest.raises(CommandError, match="expected one"):
        call_command("roles_table", "--write", str(target), stdout=StringIO())
    assert target.read_text() == "# No markers\n"


def page_config(response, name: str) -> dict:
    match = re.search(
        rf'<script id="{name}" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, "the page carries its config"
    return json.loads(match.group(1))


@pytest.mark.parametrize(
    ("role", "refused"),
    [
        ("owner", set()),
        ("admin", {"admin.manage", "workspace.manage"}),
        (
            "member",
            {
                "conversation.write_any",
                "provider.manage",
                "member.invite",
                "member.manage",
                "admin.manage",
                "workspace.settings",
                "workspace.manage",
                "audit.read",
                "usage.read",
            },
        ),
    ],
)
def test_the_page_gets_the_refusals_of_the_role(bob, role, refused):
    Membership.objects.filter(user=bob).update(role=role)
    client = Client()
    client.force_login(bob)
    config = page_config(client.get("/"), "playground-config")
    assert set(config["refusals"]) == refused
    for action, text in config["refusals"].items():
        assert text == access.POLICY[action].refusal


def test_a_viewer_gets_the_reasons_the_page_shows(bob, alice, conversation):
    Membership.objects.filter(user=bob).update(role=Membership.Role.VIEWER)
    client = Client()
    client.force_login(bob)
    response = client.get(f"/c/{conversation.id}/")
    refusals = page_config(response, "playground-config")["refusals"]
    assert (
        refusals["conversation.write"]
        == "Viewers can read and fork conversations but not send or change them."
    )
    assert refusals["conversation.create"] == access.POLICY["conversation.create"].refusal
    assert refusals["provider.use"] == access.POLICY["provider.use"].refusal
    html = response.content.decode()
    # The controls point at the visible notes the page fills with those reasons.
    assert 'id="send" aria-describedby="write-reason send-reason"' in html
    assert 'id="add-turn-open" aria-describedby="write-reason"' in html
    assert 'id="new-conversation" aria-describedby="create-reason"' in html
    assert 'id="import-open" aria-describedby="create-reason"' in html
    for note in ("write-reason", "create-reason", "probe-reason"):
        assert f'id="{note}"' in html


def test_compare_disables_its_button_with_the_policys_reason_for_viewers(bob, workspace):
    client = Client()
    client.force_login(bob)
    assert 'id="run-reason"' not in client.get("/compare/").content.decode()  # a member may run
    Membership.objects.filter(user=bob).update(role=Membership.Role.VIEWER)
    html = client.get("/compare/").content.decode()
    reason = access.POLICY["conversation.create"].refusal
    assert re.search(
        r'<button type="submit" id="run" disabled aria-describedby="run-reason"[^>]*>Compare</button>', html
    )
    assert f'<p class="note role-reason" id="run-reason">{reason}</p>' in html

"""Management commands: first-run set-up, adding providers, and their keys."""

import io
import sys

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from playground.models import Membership, Provider, Workspace

pytestmark = pytest.mark.django_db


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def test_bootstrap_creates_a_workspace_the_demo_provider_and_an_admin(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    output = run("bootstrap")
    password = output.split("password: ")[1].split()[0]
    admin = User.objects.get(username="admin")
    assert admin.check_password(password)
    assert admin.is_superuser
    assert Membership.objects.get(user=admin).role == "owner"
    assert Provider.objects.get(is_demo=True).workspace == Workspace.objects.get(slug="default")


def test_bootstrap_honours_the_django_superuser_variables(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-enough")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "root@example.com")
    output = run("bootstrap")
    assert "s3cret-enough" not in output
    assert User.objects.get(username="root", email="root@example.com").check_password("s3cret-enough")


def test_bootstrap_twice_changes_nothing_and_prints_no_password(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    run("bootstrap")
    assert run("bootstrap") == ""
    assert Provider.objects.filter(is_demo=True).count() == 1


def test_bootstrap_gives_users_made_before_it_a_workspace(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-enough")
    root = User.objects.create_superuser("root", password="s3cret-enough")  # createsuperuser first
    dora = User.objects.create_user("dora")
    assert not Membership.objects.exists()  # no workspace to join yet
    output = run("bootstrap")
    assert "Added 'root' to the Default workspace as owner." in output
    roles = {m.user: (m.workspace.slug, m.role) for m in Membership.objects.all()}
    assert roles == {root: ("default", "owner"), dora: ("default", "member")}
    Membership.objects.filter(user=dora).delete()  # an admin takes dora's access away
    assert "Added" not in run("bootstrap")  # and a restart does not give it back
    assert not Membership.objects.filter(user=dora).exists()


def test_issue15_3_new_users_join_no_workspace_until_they_are_added(workspace):
    user = User.objects.create_user("dora")
    assert not Membership.objects.filter(user=user).exists()


def test_addprovider_reads_the_key_from_the_environment(workspace, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PROVIDER_KEY", "sk-from-env-1234")
    output = run(
        "addprovider",
        "Quick",
        "--base-url",
        "https://api.quickrouter.ai/v1",
        "--workspace",
        "acme",
        "--header",
        "Accept: application/json",
        "--header",
        "X-Forwarded-Host:api.quickrouter.ai",
    )
    provider = Provider.objects.get(name="Quick")
    assert provider.get_api_key().reveal() == "sk-from-env-1234"
    assert provider.extra_headers == {"Accept": "application/json", "X-Forwarded-Host": "api.quickrouter.ai"}
    assert "sk-from-env-1234" not in output
    assert "sk-…1234" in output


def test_addprovider_reads_the_key_from_stdin(workspace, monkeypatch):
    monkeypatch.delenv("PLAYGROUND_PROVIDER_KEY", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("sk-from-stdin-5678\n"))
    run("addprovider", "Jiekou", "--base-url", "https://api.jiekou.ai/openai/v1", "--workspace", "acme")
    assert Provider.objects.get(name="Jiekou").get_api_key().reveal() == "sk-from-stdin-5678"


def test_addprovider_has_no_key_argument(workspace):
    with pytest.raises(CommandError):
        run("addprovider", "X", "--base-url", "https://x/v1", "--key", "sk-visible")


def test_addprovider_refuses_a_bad_url(workspace, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PROVIDER_KEY", "k")
    with pytest.raises(CommandError, match="http:// or https://"):
        run("addprovider", "X", "--base-url", "ftp://x", "--workspace", "acme")


def test_addprovider_refuses_an_authorization_header(workspace, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PROVIDER_KEY", "k")
    with pytest.raises(CommandError, match="API key field"):
        run(
            "addprovider",
            "X",
            "--base-url",
            "https://x/v1",
            "--workspace",
            "acme",
            "--header",
            "Authorization: Bearer sk-oops",
        )

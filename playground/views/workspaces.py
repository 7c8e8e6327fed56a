"""Workspaces: a new one for any logged-in user (when PLAYGROUND_ALLOW_NEW_WORKSPACES), and
each one's settings page: default visibility and share links for owners and admins
("workspace.settings"); rename and delete for the owner ("workspace.manage"). Deleting a
workspace keeps its runs in the ledger (Run.workspace is SET_NULL)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify

from playground import audit
from playground.access import ACCOUNT, Forbidden, NoWorkspace, allows, current_workspace, membership_for, page
from playground.models import DEMO_PROVIDER_NAME, Conversation, Membership, Provider, Workspace, new_demo_key
from playground.views.members import refused, workspaces_of
from playground.views.pages import no_workspace


def add_demo_provider(workspace: Workspace) -> Provider:
    """The built-in Demo provider of a workspace (as bootstrap makes it)."""
    demo = Provider(workspace=workspace, name=DEMO_PROVIDER_NAME, is_demo=True)
    demo.set_api_key(new_demo_key())
    demo.save()
    return demo


def unique_slug(name: str) -> str:
    base = (slugify(name) or "workspace")[:80]
    slug, n = base, 1
    while Workspace.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


class NameForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100, strip=True)


class SettingsForm(forms.Form):
    default_visibility = forms.ChoiceField(
        label="New conversations are", choices=Conversation.Visibility.choices
    )
    public_share_links = forms.BooleanField(
        label="Share links open for anyone who has them (else only for logged-in members)", required=False
    )


@page(ACCOUNT, methods=("GET", "POST"))
def new_workspace(request: HttpRequest) -> HttpResponse:
    if not settings.PLAYGROUND_ALLOW_NEW_WORKSPACES:
        return refused(request, "New workspaces are turned off on this server; ask an administrator.")
    form = NameForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            name = form.cleaned_data["name"]
            workspace = Workspace.objects.create(name=name, slug=unique_slug(name))
            Membership.objects.create(workspace=workspace, user=request.user, role=Membership.Role.OWNER)
            add_demo_provider(workspace)
            audit.record("workspace.created", request=request, workspace=workspace, target=workspace)
        request.session["workspace"] = workspace.id
        messages.success(request, f"Created {workspace.name}; you own it.")
        return redirect(reverse("index") + f"?workspace={workspace.id}")
    return render(
        request,
        "playground/workspace_new.html",
        {"form": form, "workspaces": workspaces_of(request.user)},
        status=400 if form.is_bound else 200,
    )


@page("workspace.settings", methods=("GET", "POST"))
def workspace_settings(request: HttpRequest, workspace_id: int | None = None) -> HttpResponse:
    if workspace_id is None:
        try:
            workspace_id = current_workspace(request).id
        except NoWorkspace:
            return no_workspace(request)
    try:
        me = membership_for(request.user, workspace_id, "workspace.settings")
    except Forbidden as exc:
        return refused(request, str(exc))
    workspace = me.workspace
    initial = {
        "default_visibility": workspace.default_visibility,
        "public_share_links": workspace.public_share_links,
    }
    form = SettingsForm(request.POST or None, initial=initial)
    if request.method == "POST":
        if not form.is_valid():
            return render_settings(request, me, form, status=400)
        changed = {
            k: {"before": initial[k], "after": v} for k, v in form.cleaned_data.items() if initial[k] != v
        }
        if changed:
            for key, change in changed.items():
                setattr(workspace, key, change["after"])
            workspace.save(update_fields=list(changed))
            audit.record(
                "workspace.settings_changed",
                request=request,
                workspace=workspace,
                target=workspace,
                **changed,
            )
        messages.success(request, "Settings saved.")
        return redirect("workspace-settings-of", workspace_id=workspace.id)
    return render_settings(request, me, form)


def render_settings(request, me: Membership, form, *, name_form=None, status: int = 200) -> HttpResponse:
    workspace = me.workspace
    return render(
        request,
        "playground/workspace_settings.html",
        {
            "workspace": workspace,
            "workspaces": workspaces_of(request.user),
            "form": form,
            "name_form": name_form or NameForm(initial={"name": workspace.name}),
            "can_manage": allows(me.role, "workspace.manage"),
        },
        status=status,
    )


@page("workspace.manage", methods=("POST",))
def rename_workspace(request: HttpRequest, workspace_id: int) -> HttpResponse:
    try:
        me = membership_for(request.user, workspace_id, "workspace.manage")
    except Forbidden as exc:
        return refused(request, str(exc))
    workspace = me.workspace
    name_form = NameForm(request.POST)
    if not name_form.is_valid():
        return render_settings(request, me, SettingsForm(initial={}), name_form=name_form, status=400)
    before = workspace.name
    if name_form.cleaned_data["name"] != before:
        workspace.name = name_form.cleaned_data["name"]
        workspace.save(update_fields=["name"])
        audit.record(
            "workspace.renamed", request=request, workspace=workspace, target=workspace, before=before
        )
        messages.success(request, f"Renamed to {workspace.name}.")
    return redirect("workspace-settings-of", workspace_id=workspace.id)


@page("workspace.manage", methods=("POST",))
def delete_workspace(request: HttpRequest, workspace_id: int) -> HttpResponse:
    try:
        me = membership_for(request.user, workspace_id, "workspace.manage")
    except Forbidden as exc:
        return refused(request, str(exc))
    workspace = me.workspace
    if request.POST.get("confirm", "") != workspace.name:
        return refused(request, f"Type the workspace's name, {workspace.name}, to delete it.", status=400)
    with transaction.atomic():
        audit.record("workspace.deleted", request=request, workspace=workspace, target=workspace)
        workspace.delete()
    request.session.pop("workspace", None)
    messages.success(request, f"Deleted {workspace.name}.")
    return redirect("index")


def context(request: HttpRequest) -> dict:
    """Template context for every page (settings.TEMPLATES): whether "New workspace" shows."""
    return {"allow_new_workspaces": settings.PLAYGROUND_ALLOW_NEW_WORKSPACES}

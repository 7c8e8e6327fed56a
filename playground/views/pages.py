"""The pages: the playground itself (`index`, a conversation's page too) and Compare.

Compare runs one conversation in 2–4 columns side by side, or one setup N times. The
pages only render; everything else goes through the JSON API and the conversation
websocket.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from playground.access import (
    POLICY,
    NoWorkspace,
    allows,
    conversation_for,
    current_workspace,
    membership_for,
    page,
)
from playground.models import Workspace
from playground.validation import PARAMETERS

MAX_COLUMNS = 4
# The parameters every Compare column shows (the extra body box takes anything else): name, step.
COLUMN_PARAMETERS = [("temperature", "0.1"), ("top_p", "0.05"), ("max_tokens", "1"), ("seed", "1")]


def no_workspace(request: HttpRequest) -> HttpResponse:
    return render(request, "playground/no_workspace.html")


def refusals(role: str) -> dict[str, str]:
    """The policy's reason for each action `role` may not take: the page disables those
    controls and shows the reason beside them."""
    return {name: a.refusal for name, a in POLICY.items() if a.refusal and not allows(role, name)}


def enabled_providers(workspace: Workspace) -> list[dict]:
    return [p.to_dict() for p in workspace.providers.filter(enabled=True).order_by("-is_demo", "name")]


@page("conversation.read")
def index(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    try:
        workspace = current_workspace(request)
    except NoWorkspace:
        return no_workspace(request)
    if conversation_id is not None:
        conversation = conversation_for(request.user, conversation_id)
        if conversation.workspace_id != workspace.id:
            workspace = conversation.workspace
            request.session["workspace"] = workspace.id
    membership = membership_for(request.user, workspace.id)
    config = {
        "workspace": workspace.id,
        "conversation": conversation_id,
        "user": request.user.get_username(),
        "canRun": allows(membership.role, "conversation.create"),
        "canAdmin": allows(membership.role, "provider.manage"),
        "refusals": refusals(membership.role),
        "providers": enabled_providers(workspace),
        "parameters": PARAMETERS,
    }
    workspaces = Workspace.objects.filter(memberships__user=request.user).order_by("name")
    return render(
        request,
        "playground/index.html",
        {"config": config, "workspace": workspace, "workspaces": workspaces},
    )


@page("workspace.read")
def compare(request: HttpRequest) -> HttpResponse:
    # Only the user's own workspaces: a `?workspace=` they are not in falls back to theirs.
    try:
        workspace = current_workspace(request)
    except NoWorkspace:
        return no_workspace(request)
    role = membership_for(request.user, workspace.id).role
    config = {
        "workspace": workspace.id,
        "user": request.user.get_username(),
        "canRun": allows(role, "conversation.create"),
        "refusals": refusals(role),
        "providers": enabled_providers(workspace),
        "parameters": PARAMETERS,
        "maxColumns": MAX_COLUMNS,
    }
    workspaces = Workspace.objects.filter(memberships__user=request.user).order_by("name")
    return render(
        request,
        "playground/compare.html",
        {
            "config": config,
            "workspace": workspace,
            "workspaces": workspaces,
            "columns": range(1, MAX_COLUMNS + 1),
            "run_refusal": config["refusals"].get("conversation.create", ""),
            "parameters": [
                {"name": name, "step": step, "kind": PARAMETERS[name]["kind"]}
                for name, step in COLUMN_PARAMETERS
            ],
        },
    )

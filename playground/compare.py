"""The Compare page: one conversation run in 2–4 columns side by side, or one setup N times.

The page only renders; every column creates, runs and watches its own conversation
through the JSON API and the conversation websocket, as the main page does.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from playground.forms import PARAMETERS
from playground.models import Workspace
from playground.views import NoWorkspace, current_workspace, membership_for, no_workspace

MAX_COLUMNS = 4
# The parameters every column shows (the extra body box takes anything else): name, step.
COLUMN_PARAMETERS = [("temperature", "0.1"), ("top_p", "0.05"), ("max_tokens", "1"), ("seed", "1")]


@login_required
def page(request: HttpRequest) -> HttpResponse:
    # Only the user's own workspaces: a `?workspace=` they are not in falls back to theirs.
    try:
        workspace = current_workspace(request)
    except NoWorkspace:
        return no_workspace(request)
    config = {
        "workspace": workspace.id,
        "user": request.user.get_username(),
        "canRun": membership_for(request.user, workspace.id).can_run,
        "providers": [
            p.to_dict() for p in workspace.providers.filter(enabled=True).order_by("-is_demo", "name")
        ],
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
            "parameters": [
                {"name": name, "step": step, "kind": PARAMETERS[name]["kind"]}
                for name, step in COLUMN_PARAMETERS
            ],
        },
    )

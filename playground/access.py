"""Who may do what: the one permission policy of the web pages and the JSON API.

A user sees only the workspaces they are a member of; anything outside them is a 404
(`Http404`), never a 403, so ids do not reveal what exists. Inside a workspace the role
decides (`Membership.Role`): viewers read; members (and up) run, write turns, probe
and import; owners and admins also manage the workspace's providers and what others
created (conversations, shared presets). A refusal for the role is `Forbidden`, in
plain words, answered as a 403 by `playground.api.api`.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404

from playground.models import Conversation, Membership, Run, Workspace

MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


class Forbidden(Exception):
    """The user's role does not allow this (a 403); the message says what would."""


class LoggedOut(Exception):
    """No user is logged in (a 401)."""


class NoWorkspace(Http404):
    """The user is in no workspace: pages say so (`no_workspace`), the API answers 404."""


def is_manager(role: str | None) -> bool:
    """Owners and admins manage a workspace: its providers' profiles, others' conversations
    and shared presets."""
    return role in MANAGER_ROLES


def membership_for(user, workspace_id: int) -> Membership:
    """The user's membership of the workspace, or Http404."""
    membership = Membership.objects.filter(user=user, workspace_id=workspace_id).first()
    if membership is None:
        raise Http404
    return membership


def runner_of(user, workspace_id: int, refusal: str) -> Membership:
    """The user's membership when their role may run (spend tokens, write): else
    Forbidden(`refusal`); Http404 outside the workspace."""
    membership = membership_for(user, workspace_id)
    if not membership.can_run:
        raise Forbidden(refusal)
    return membership


def manager_of(user, workspace_id: int, refusal: str) -> Membership:
    """The user's membership when they are an owner or admin of the workspace: else
    Forbidden(`refusal`); Http404 outside the workspace."""
    membership = membership_for(user, workspace_id)
    if not is_manager(membership.role):
        raise Forbidden(refusal)
    return membership


def conversation_for(user, conversation_id: int, *, write: bool = False, lock: bool = False) -> Conversation:
    """The conversation, if `user` is a member of its workspace: one query, the role
    read alongside (`member_role`). `write`: Forbidden for a viewer. `lock` (inside a
    transaction) locks its row until the commit."""
    conversation = Conversation.objects.for_member(user.id, conversation_id, lock=lock)
    if conversation is None or conversation.member_role is None:
        raise Http404
    if write and not Membership(role=conversation.member_role).can_run:
        raise Forbidden("Viewers can watch conversations but not change them.")
    return conversation


def may_manage(user, conversation: Conversation) -> bool:
    """Renaming and deleting: the conversation's creator, or an owner or admin of its workspace
    (`conversation` from conversation_for, its `member_role` read)."""
    return conversation.creator_id == user.id or is_manager(conversation.member_role)


def run_for(user, run_id: int, *, write: bool = False) -> Run:
    """The run (its conversation loaded), if the user may see its conversation (`write`:
    change it)."""
    run = get_object_or_404(Run.objects.select_related("conversation"), id=run_id)
    conversation_for(user, run.conversation_id, write=write)
    return run


def current_workspace(request: HttpRequest) -> Workspace:
    """The workspace the request works in: `?workspace=`, else the session's, else the
    user's first; remembered in the session. NoWorkspace for a user in none."""
    memberships = Membership.objects.filter(user=request.user).select_related("workspace")
    wanted = request.GET.get("workspace") or request.session.get("workspace")
    chosen = next((m for m in memberships if str(m.workspace_id) == str(wanted)), None)
    chosen = chosen or memberships.order_by("id").first()
    if chosen is None:
        raise NoWorkspace("You are not a member of any workspace; ask an admin to add you.")
    if request.session.get("workspace") != chosen.workspace_id:  # else no session write
        request.session["workspace"] = chosen.workspace_id
    return chosen.workspace

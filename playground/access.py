"""Who may do what: the one permission policy of the pages, the JSON API and the sockets.

`POLICY` names every action and the roles that may take it; the README's roles table and
the members page are rendered from it, and every view declares the action each of its
HTTP methods takes (`api(methods={"GET": "conversation.read", …})`, `page(action)`), so
the generated permission test (tests/test_permissions.py) can walk the URL patterns and
check every route × role × own/other workspace against this table.

A user sees only the workspaces they are a member of; anything outside them is a 404
(`Http404`), never a 403, so ids do not reveal what exists. A private conversation is
likewise a 404 to members other than its creator and the workspace's owners and admins.
Inside a workspace the role decides; a refusal for the role is `Forbidden` with the
action's reason in plain words (a 403 from `playground.api.api`; pages show the reason
beside the control they disable).

Object rules on top of the table: "conversation.write" on a conversation someone else
created needs "conversation.write_any" (owners and admins); teammates read and fork a
shared conversation but do not send in it. Admins manage members and viewers;
"admin.manage" (owners) is needed to make, change or remove an admin, and an owner is
changed only by a transfer of ownership.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_http_methods

from playground.models import Conversation, Membership, Run, Workspace

Role = Membership.Role
ROLES = (Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER)
MANAGER_ROLES = (Role.OWNER, Role.ADMIN)
EVERYONE = frozenset(ROLES)
WRITERS = frozenset((Role.OWNER, Role.ADMIN, Role.MEMBER))
MANAGERS = frozenset(MANAGER_ROLES)
OWNERS = frozenset((Role.OWNER,))

# Not an action of a workspace: the view answers anyone (the login page, a share link's
# page, the Demo relay, which checks its own key).
PUBLIC = "public"
# Logged in, in no particular workspace (their account, a new workspace, an invitation).
ACCOUNT = "account"


@dataclass(frozen=True)
class Action:
    roles: frozenset
    what: str  # what it lets a role do, for the roles table
    refusal: str  # the reason given to a role that may not


POLICY: dict[str, Action] = {
    "workspace.read": Action(
        EVERYONE,
        "See the workspace: its shared conversations, providers (never their keys), presets and members",
        "",
    ),
    "conversation.read": Action(EVERYONE, "Read a shared conversation and watch its runs live", ""),
    "conversation.fork": Action(EVERYONE, "Fork a conversation into a private one of their own", ""),
    "conversation.create": Action(
        WRITERS,
        "Start, import and run conversations",
        "Viewers can read and fork conversations but not start or run them.",
    ),
    "conversation.write": Action(
        WRITERS,
        "Send, edit, rename, share and delete the conversations they created",
        "Viewers can read and fork conversations but not send or change them.",
    ),
    "conversation.write_any": Action(
        MANAGERS,
        "Do the same in anyone's conversation, private ones included",
        "Only the conversation's creator, or an owner or admin of the workspace, may change it.",
    ),
    "preset.save": Action(EVERYONE, "Save, change and delete their own presets", ""),
    "preset.share": Action(
        WRITERS,
        "Share presets with the workspace (owners and admins also unshare or delete others')",
        "Viewers can save presets for themselves but not share them.",
    ),
    "provider.use": Action(
        WRITERS,
        "Run and probe the workspace's providers",
        "Viewers cannot use providers: that spends tokens.",
    ),
    "provider.manage": Action(
        MANAGERS,
        "Add, edit, test and delete providers; rotate keys; set prices",
        "Only owners and admins manage providers.",
    ),
    "member.invite": Action(
        MANAGERS, "Create and revoke invite links", "Only owners and admins invite people."
    ),
    "member.manage": Action(
        MANAGERS,
        "Change the role of members and viewers, or remove them",
        "Only owners and admins manage members.",
    ),
    "admin.manage": Action(OWNERS, "Make, change or remove admins", "Only the owner manages admins."),
    "workspace.settings": Action(
        MANAGERS,
        "Change the workspace's settings: default visibility, share links, limits",
        "Only owners and admins change the workspace's settings.",
    ),
    "workspace.manage": Action(
        OWNERS,
        "Rename or delete the workspace, transfer ownership",
        "Only the owner renames, deletes or transfers the workspace.",
    ),
    "workspace.leave": Action(EVERYONE, "Leave the workspace (an owner transfers ownership first)", ""),
    "audit.read": Action(
        MANAGERS, "Read and export the audit log", "Only owners and admins read the audit log."
    ),
    "usage.read": Action(MANAGERS, "Review usage and costs", "Only owners and admins review usage."),
}


class Forbidden(Exception):
    """The user's role does not allow this (a 403); the message says what would."""


class LoggedOut(Exception):
    """No user is logged in (a 401)."""


class NoWorkspace(Http404):
    """The user is in no workspace: pages say so (`no_workspace`), the API answers 404."""


def allows(role: str | None, action: str) -> bool:
    """Whether `role` may take `action` (KeyError for an action not in POLICY)."""
    return role in POLICY[action].roles


def require(role: str | None, action: str) -> None:
    """Forbidden, with the action's reason, unless `role` may take `action`."""
    if not allows(role, action):
        raise Forbidden(POLICY[action].refusal)


def is_manager(role: str | None) -> bool:
    """Owners and admins manage a workspace."""
    return role in MANAGER_ROLES


def membership_for(user, workspace_id: int, action: str = "workspace.read") -> Membership:
    """The user's membership of the workspace when their role may take `action`: Http404
    outside the workspace, Forbidden inside it for a role that may not."""
    membership = Membership.objects.filter(user=user, workspace_id=workspace_id).first()
    if membership is None:
        raise Http404
    require(membership.role, action)
    return membership


def can_see(user, conversation: Conversation) -> bool:
    """Whether a member (`conversation.member_role` read, as conversation_for does) may see
    it at all: shared, or theirs, or they own or administer the workspace."""
    return (
        conversation.visibility == Conversation.Visibility.SHARED
        or conversation.creator_id == user.id
        or is_manager(conversation.member_role)
    )


def conversation_for(
    user, conversation_id: int, action: str = "conversation.read", *, lock: bool = False
) -> Conversation:
    """The conversation, if `user` may see it (a member of its workspace; `can_see`; not in
    the trash): one query, the role read alongside (`member_role`). Then `action`
    ("conversation.read", "conversation.fork" or "conversation.write") for the role, and
    for "conversation.write" on someone else's conversation "conversation.write_any".
    `lock` (inside a transaction) locks its row until the commit."""
    conversation = Conversation.objects.for_member(user.id, conversation_id, lock=lock)
    if conversation is None or conversation.member_role is None or conversation.deleted_at is not None:
        raise Http404
    if not can_see(user, conversation):
        raise Http404
    require(conversation.member_role, action)
    if action == "conversation.write" and conversation.creator_id != user.id:
        require(conversation.member_role, "conversation.write_any")
    return conversation


def may_write(user, conversation: Conversation) -> bool:
    """Whether conversation_for(…, "conversation.write") would let `user` change it
    (`conversation` from conversation_for, its `member_role` read)."""
    if not allows(conversation.member_role, "conversation.write"):
        return False
    return conversation.creator_id == user.id or allows(conversation.member_role, "conversation.write_any")


def run_for(user, run_id: int, action: str = "conversation.read") -> Run:
    """The run (its conversation loaded), if the user may take `action` on its conversation."""
    run = get_object_or_404(Run.objects.select_related("conversation"), id=run_id)
    if run.conversation_id is None:
        raise Http404
    conversation_for(user, run.conversation_id, action)
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


def declare(view: Callable, actions: dict[str, str]) -> Callable:
    """Record on `view` the action each HTTP method takes (`view.actions`): the contract
    the generated permission test checks the view against. Every name must be in POLICY,
    or PUBLIC, or ACCOUNT."""
    unknown = {a for a in actions.values() if a not in POLICY and a not in (PUBLIC, ACCOUNT)}
    if unknown:
        raise ValueError(f"{view.__name__}: actions not in the policy: {sorted(unknown)}")
    view.actions = {method.upper(): action for method, action in actions.items()}
    return view


def page(action: str, methods: tuple[str, ...] = ("GET",)) -> Callable:
    """A page (HTML) view: login required (unless `action` is PUBLIC), another method
    than `methods` a 405, and its action declared for `methods`. The view checks the
    action against the workspace it shows."""

    def decorate(view: Callable) -> Callable:
        wrapped = require_http_methods(list(methods))(view if action == PUBLIC else login_required(view))
        return declare(wrapped, dict.fromkeys(methods, action))

    return decorate


def roles_table() -> list[dict]:
    """The policy as rows for the roles table: action, what it allows, and per role yes/no."""
    return [
        {"action": name, "what": a.what, "roles": {role: role in a.roles for role in ROLES}}
        for name, a in POLICY.items()
    ]

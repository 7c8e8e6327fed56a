"""The members page and invitations: who is in a workspace, as what, and how people join.

Owners and admins change roles and remove people within `access.POLICY` ("member.manage";
"admin.manage" when an admin is made, changed or removed); the owner's own row changes only
by "Transfer ownership", so a workspace always has exactly one owner. Everyone may leave,
except the owner, who transfers first. A removed member's open sockets close at once
(playground.signals reacts to the membership's delete).

An invite link carries a token (`secrets.token_urlsafe(32)`) shown once to its creator; only
its digest (`models.token_digest`) is stored. Whoever opens it, signed up on the spot or
logged in, joins as its role while it is not revoked or expired, has uses left and, when it
names an email address, their account has that address. Joins lock the invitation's row, so
concurrent joins never exceed `max_uses`.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone

from playground import audit
from playground.access import (
    PUBLIC,
    ROLES,
    Forbidden,
    NoWorkspace,
    allows,
    current_workspace,
    membership_for,
    page,
    require,
    roles_table,
)
from playground.models import Invitation, Membership, Workspace, token_digest
from playground.views.pages import no_workspace

Role = Membership.Role
EXPIRY_DAYS = (1, 7, 30)
INVALID_LINK = "This invite link is not valid."


def refused(request: HttpRequest, reason: str, status: int = 403) -> HttpResponse:
    """A page refusing an action, with the reason in words."""
    return render(request, "playground/refused.html", {"reason": reason}, status=status)


def workspaces_of(user):
    return Workspace.objects.filter(memberships__user=user).order_by("name")


def assignable_roles(role: str | None) -> list[str]:
    """The roles a member with `role` may give (never owner: that is a transfer)."""
    if not allows(role, "member.manage"):
        return []
    given = [Role.MEMBER, Role.VIEWER]
    return ([Role.ADMIN] if allows(role, "admin.manage") else []) + given


def require_manage(actor: Membership, target_role: str, new_role: str | None = None) -> None:
    """Forbidden unless `actor` may change a member whose role is `target_role` (to `new_role`)."""
    require(actor.role, "member.manage")
    if Role.OWNER in (target_role, new_role):
        raise Forbidden("The owner's role changes only by a transfer of ownership.")
    if Role.ADMIN in (target_role, new_role):
        require(actor.role, "admin.manage")


# -- the page ------------------------------------------------------------------------------


class InviteForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=[])
    expires_in = forms.TypedChoiceField(
        label="Expires in",
        coerce=int,
        choices=[(d, f"{d} day{'s' if d > 1 else ''}") for d in EXPIRY_DAYS],
        initial=7,
    )
    max_uses = forms.IntegerField(label="Uses", min_value=1, max_value=1000, initial=1)
    email = forms.EmailField(label="Email (optional)", required=False)

    def __init__(self, *args, roles: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(r, Role(r).label) for r in roles if r != Role.OWNER]
        self.fields["role"].initial = Role.MEMBER


@page("workspace.read")
def members(request: HttpRequest, workspace_id: int | None = None) -> HttpResponse:
    if workspace_id is None:
        try:
            workspace = current_workspace(request)
        except NoWorkspace:
            return no_workspace(request)
    else:
        workspace = membership_for(request.user, workspace_id).workspace
        request.session["workspace"] = workspace.id
    return render_members(request, workspace)


def render_members(
    request: HttpRequest, workspace: Workspace, *, form=None, link: str = "", status: int = 200
) -> HttpResponse:
    me = membership_for(request.user, workspace.id)
    rows = []
    for m in workspace.memberships.select_related("user").order_by("created_at", "id"):
        try:
            require_manage(me, m.role)
            manageable = m.user_id != request.user.id
        except Forbidden:
            manageable = False
        rows.append({"m": m, "manageable": manageable, "roles": assignable_roles(me.role)})
    can_invite = allows(me.role, "member.invite")
    invitations = []
    if can_invite:
        now = timezone.now()
        for inv in workspace.invitations.select_related("created_by").order_by("-created_at"):
            state = (
                "revoked"
                if inv.revoked_at
                else "expired"
                if inv.expires_at and inv.expires_at <= now
                else "used up"
                if inv.uses >= inv.max_uses
                else "active"
            )
            invitations.append({"inv": inv, "state": state})
    context = {
        "workspace": workspace,
        "workspaces": workspaces_of(request.user),
        "me": me,
        "rows": rows,
        "roles": ROLES,
        "roles_table": roles_table(),
        "can_invite": can_invite,
        "can_transfer": allows(me.role, "workspace.manage"),
        "can_settings": allows(me.role, "workspace.settings"),
        "invite_form": form or InviteForm(roles=assignable_roles(me.role)),
        "invitations": invitations,
        "link": link,
        "others": [r["m"] for r in rows if r["m"].user_id != request.user.id],
    }
    return render(request, "playground/members.html", context, status=status)


def members_url(workspace_id: int) -> str:
    return reverse("workspace-members", args=[workspace_id])


# -- roles, removal, transfer, leaving ---------------------------------------------------------


@page("member.manage", methods=("POST",))
def change_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    target = get_object_or_404(Membership.objects.select_related("user", "workspace"), id=membership_id)
    try:
        me = membership_for(request.user, target.workspace_id, "member.manage")
        new_role = request.POST.get("role", "")
        if new_role not in (Role.ADMIN, Role.MEMBER, Role.VIEWER):
            return refused(request, "Role: choose admin, member or viewer.", status=400)
        require_manage(me, target.role, new_role)
    except Forbidden as exc:
        return refused(request, str(exc))
    before = target.role
    if before != new_role:
        target.role = new_role
        target.save(update_fields=["role"])
        audit.record(
            "member.role_changed",
            request=request,
            workspace=target.workspace,
            target=target.user,
            before=before,
            after=new_role,
        )
        messages.success(request, f"{target.user.get_username()} is now {new_role}.")
    return redirect(members_url(target.workspace_id))


@page("member.manage", methods=("POST",))
def remove_member(request: HttpRequest, membership_id: int) -> HttpResponse:
    target = get_object_or_404(Membership.objects.select_related("user", "workspace"), id=membership_id)
    try:
        me = membership_for(request.user, target.workspace_id, "member.manage")
        require_manage(me, target.role)
    except Forbidden as exc:
        return refused(request, str(exc))
    if target.user_id == request.user.id:
        return refused(request, "To remove yourself, use Leave workspace.", status=400)
    target.delete()
    audit.record(
        "member.removed", request=request, workspace=target.workspace, target=target.user, role=target.role
    )
    messages.success(request, f"Removed {target.user.get_username()} from {target.workspace.name}.")
    return redirect(members_url(target.workspace_id))


@page("workspace.manage", methods=("POST",))
def transfer(request: HttpRequest, workspace_id: int) -> HttpResponse:
    try:
        membership_for(request.user, workspace_id, "workspace.manage")
    except Forbidden as exc:
        return refused(request, str(exc))
    with transaction.atomic():
        me = Membership.objects.select_for_update().get(user=request.user, workspace_id=workspace_id)
        if me.role != Role.OWNER:
            return refused(request, "Only the owner transfers the workspace.")
        target = (
            Membership.objects.select_for_update()
            .select_related("user", "workspace")
            .filter(workspace_id=workspace_id, id=request.POST.get("membership") or 0)
            .exclude(user=request.user)
            .first()
            if str(request.POST.get("membership", "")).isdigit()
            else None
        )
        if target is None:
            return refused(request, "New owner: choose another member of this workspace.", status=400)
        before = target.role
        me.role = Role.ADMIN
        me.save(update_fields=["role"])
        target.role = Role.OWNER
        target.save(update_fields=["role"])
        audit.record(
            "workspace.transferred",
            request=request,
            workspace=target.workspace,
            target=target.user,
            before=before,
            previous_owner=request.user.get_username(),
        )
    messages.success(
        request, f"{target.user.get_username()} now owns {target.workspace.name}; you are an admin."
    )
    return redirect(members_url(workspace_id))


@page("workspace.leave", methods=("POST",))
def leave(request: HttpRequest, workspace_id: int) -> HttpResponse:
    me = membership_for(request.user, workspace_id, "workspace.leave")
    if me.role == Role.OWNER:
        return refused(
            request,
            "You own this workspace: transfer ownership to another member before you leave.",
            status=409,
        )
    workspace = me.workspace
    me.delete()
    audit.record("member.left", request=request, workspace=workspace, target=request.user, role=me.role)
    if request.session.get("workspace") == workspace_id:
        del request.session["workspace"]
    messages.success(request, f"You left {workspace.name}.")
    return redirect("index")


# -- invitations -----------------------------------------------------------------------------


@page("member.invite", methods=("POST",))
def create_invite(request: HttpRequest, workspace_id: int) -> HttpResponse:
    try:
        me = membership_for(request.user, workspace_id, "member.invite")
    except Forbidden as exc:
        return refused(request, str(exc))
    workspace = me.workspace
    form = InviteForm(request.POST, roles=assignable_roles(me.role))
    if not form.is_valid():
        return render_members(request, workspace, form=form, status=400)
    token = secrets.token_urlsafe(32)
    data = form.cleaned_data
    invitation = Invitation.objects.create(
        workspace=workspace,
        role=data["role"],
        token_hash=token_digest(token),
        email=data["email"],
        expires_at=timezone.now() + timedelta(days=data["expires_in"]),
        max_uses=data["max_uses"],
        created_by=request.user,
    )
    link = request.build_absolute_uri(reverse("invite", args=[token]))
    audit.record(
        "member.invited",
        request=request,
        workspace=workspace,
        target=invitation,
        role=invitation.role,
        email=invitation.email,
        max_uses=invitation.max_uses,
        expires_at=invitation.expires_at.isoformat(),
    )
    if invitation.email:
        send_mail(
            f"You are invited to {workspace.name} on Relay Playground",
            f"{request.user.get_username()} invites you to join {workspace.name} as {invitation.role}.\n\n"
            f"Open this link to join (it expires {invitation.expires_at:%Y-%m-%d %H:%M} UTC):\n{link}\n",
            None,
            [invitation.email],
            fail_silently=True,
        )
    return render_members(request, workspace, link=link)


@page("member.invite", methods=("POST",))
def revoke_invite(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = get_object_or_404(Invitation.objects.select_related("workspace"), id=invitation_id)
    try:
        membership_for(request.user, invitation.workspace_id, "member.invite")
    except Forbidden as exc:
        return refused(request, str(exc))
    updated = Invitation.objects.filter(id=invitation.id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if updated:
        audit.record("invite.revoked", request=request, workspace=invitation.workspace, target=invitation)
        messages.success(request, "Invite link revoked.")
    return redirect(members_url(invitation.workspace_id))


def invitation_problem(invitation: Invitation | None, user=None) -> str:
    """Why the invitation cannot be used now ("" when it can)."""
    if invitation is None:
        return INVALID_LINK
    if invitation.revoked_at:
        return "This invite link was revoked. Ask for a new one."
    if invitation.expires_at and invitation.expires_at <= timezone.now():
        return "This invite link has expired. Ask for a new one."
    if invitation.uses >= invitation.max_uses:
        return "This invite link has already been used. Ask for a new one."
    if (
        invitation.email
        and user is not None
        and user.is_authenticated
        and (user.email or "").strip().lower() != invitation.email.strip().lower()
    ):
        return "This invite link is for another email address than your account's."
    return ""


class JoinError(Exception):
    pass


def join(request: HttpRequest, token: str, user) -> Membership | None:
    """Join the invitation's workspace: the new membership, or None when `user` already was a
    member. JoinError with the reason when the invitation cannot be used."""
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update()
            .select_related("workspace")
            .filter(token_hash=token_digest(token))
            .first()
        )
        problem = invitation_problem(invitation, user)
        if problem:
            raise JoinError(problem)
        if Membership.objects.filter(workspace=invitation.workspace, user=user).exists():
            return None
        Invitation.objects.filter(id=invitation.id, uses__lt=F("max_uses")).update(uses=F("uses") + 1)
        membership = Membership.objects.create(
            workspace=invitation.workspace, user=user, role=invitation.role
        )
        audit.record(
            "member.joined",
            request=request,
            actor=user,
            workspace=invitation.workspace,
            target=user,
            role=invitation.role,
            invitation=invitation.id,
        )
    return membership


class SignUpForm(UserCreationForm):
    """Username, an optional email (for password resets) and the password twice."""

    email = forms.EmailField(label="Email (optional)", required=False)

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")


@page(PUBLIC, methods=("GET", "POST"))
def invite(request: HttpRequest, token: str) -> HttpResponse:
    invitation = Invitation.objects.select_related("workspace").filter(token_hash=token_digest(token)).first()
    problem = invitation_problem(invitation, request.user)
    if problem:
        return render(
            request, "playground/invite.html", {"problem": problem}, status=410 if invitation else 404
        )
    workspace = invitation.workspace
    already = (
        request.user.is_authenticated
        and Membership.objects.filter(workspace=workspace, user=request.user).exists()
    )
    form = None if request.user.is_authenticated else SignUpForm()
    if request.method == "POST" and not already:
        user = request.user
        if not user.is_authenticated:
            form = SignUpForm(request.POST)
            if not form.is_valid():
                return render(
                    request,
                    "playground/invite.html",
                    {"invitation": invitation, "workspace": workspace, "form": form},
                    status=400,
                )
            if invitation.email:  # the link went to that address
                form.instance.email = invitation.email
        try:
            with transaction.atomic():
                if not user.is_authenticated:
                    user = form.save()
                joined = join(request, token, user)
        except JoinError as exc:
            return render(request, "playground/invite.html", {"problem": str(exc)}, status=410)
        if not request.user.is_authenticated:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.session["workspace"] = workspace.id
        if joined is None:
            messages.info(request, f"You are already a member of {workspace.name}.")
        else:
            messages.success(request, f"Welcome to {workspace.name}: you joined as {joined.role}.")
        return redirect(reverse("index") + f"?workspace={workspace.id}")
    return render(
        request,
        "playground/invite.html",
        {"invitation": invitation, "workspace": workspace, "form": form, "already": already},
    )

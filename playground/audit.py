"""The audit log's one writer: `record(…)` appends an AuditEvent.

Actions are dotted names, noun first: "member.invited", "member.joined",
"member.role_changed", "member.removed", "member.left", "workspace.created",
"workspace.renamed", "workspace.settings_changed", "workspace.transferred",
"workspace.deleted", "provider.created", "provider.changed", "provider.key_changed",
"provider.prices_changed", "provider.deleted", "limits.changed", "conversation.deleted",
"conversation.restored", "conversation.visibility_changed", "conversation.shared",
"share_link.revoked", "invite.revoked",
"export.downloaded", "login.failed", "login.locked_out". `details` never holds a secret
(an API key, a token, a password): callers pass names and before/after values only.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from playground.models import AuditEvent, Workspace


def client_ip(request: HttpRequest | None) -> str | None:
    """The address the request came from as the server saw it (REMOTE_ADDR; a proxy's
    forwarded address is trusted only when a middleware has already put it there)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    action: str,
    *,
    request: HttpRequest | None = None,
    actor=None,
    workspace: Workspace | None = None,
    target: Any = None,
    target_name: str = "",
    **details: Any,
) -> AuditEvent:
    """Append one event: `actor` (default: the request's user, if logged in) did `action`
    in `workspace` to `target` (a model instance: its type, id and str are copied)."""
    if actor is None and request is not None and getattr(request, "user", None) is not None:
        actor = request.user if request.user.is_authenticated else None
    return AuditEvent.objects.create(
        workspace=workspace,
        workspace_name=workspace.name if workspace else "",
        actor=actor,
        actor_name=actor.get_username() if actor else details.pop("username", ""),
        action=action,
        target_type=type(target).__name__.lower() if target is not None else "",
        target_id=str(getattr(target, "pk", "") or "") if target is not None else "",
        target_name=(target_name or (str(target) if target is not None else ""))[:255],
        details=details,
        ip=client_ip(request),
    )

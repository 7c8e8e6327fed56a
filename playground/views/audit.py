"""The audit log's page: who did what, when and from where, for a workspace's owners and
admins ("audit.read": its events, and the failed logins and lockouts of its members'
usernames; site staff see every workspace's events and every failed login). Filters
(who, what, from, to) live in the URL's query, the table is paginated newest first, and
"Export CSV" streams the filtered log row by row (the export is itself recorded,
"export.downloaded"). Nothing here changes or deletes an event: the log is append-only
(models.AuditEvent).
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterator

from django import forms
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from playground import audit
from playground.access import Forbidden, NoWorkspace, allows, current_workspace, membership_for, page
from playground.models import AuditEvent, Membership, Workspace

PAGE_SIZE = 50
# Events of no workspace that its owners and admins see for the usernames of its members.
LOGIN_ACTIONS = ("login.failed", "login.locked_out")

# What each action is, in words (an action not listed shows its dotted name).
ACTIONS = {
    "member.invited": "Member invited",
    "member.joined": "Member joined",
    "member.role_changed": "Role changed",
    "member.removed": "Member removed",
    "member.left": "Member left",
    "invite.revoked": "Invite link revoked",
    "workspace.created": "Workspace created",
    "workspace.renamed": "Workspace renamed",
    "workspace.settings_changed": "Workspace settings changed",
    "workspace.transferred": "Ownership transferred",
    "workspace.deleted": "Workspace deleted",
    "provider.created": "Provider created",
    "provider.changed": "Provider changed",
    "provider.key_changed": "Provider key changed",
    "provider.prices_changed": "Provider prices changed",
    "provider.deleted": "Provider deleted",
    "limits.changed": "Limits changed",
    "conversation.deleted": "Conversation deleted",
    "conversation.restored": "Conversation restored",
    "conversation.shared": "Conversation shared",
    "share_link.revoked": "Share link revoked",
    "export.downloaded": "Export downloaded",
    "login.failed": "Login failed",
    "login.locked_out": "Login locked out",
}


def describe(event: AuditEvent) -> str:
    """The event's details in words: "name: value" pairs, before → after for a change."""
    parts = []
    for key, value in (event.details or {}).items():
        label = key.replace("_", " ")
        if isinstance(value, dict) and set(value) <= {"before", "after"} and value:
            parts.append(f"{label}: {value.get('before')!s} → {value.get('after')!s}")
        elif isinstance(value, list | tuple):
            parts.append(f"{label}: {', '.join(map(str, value))}")
        elif value not in (None, ""):
            parts.append(f"{label}: {value}")
    return "; ".join(parts)


class Filters(forms.Form):
    """The page's filters, read from the query string; each narrows the log."""

    who = forms.CharField(required=False, max_length=150, label="Who")
    what = forms.CharField(required=False, max_length=40, label="What")
    since = forms.DateField(required=False, label="From")
    until = forms.DateField(required=False, label="To")

    def __init__(self, data, *args, **kwargs):
        # The query names the filters "from" and "to" (Python keywords as field names).
        data = data.copy()
        for outside, inside in (("from", "since"), ("to", "until")):
            if outside in data:
                data[inside] = data[outside]
        super().__init__(data, *args, **kwargs)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("since") and cleaned.get("until") and cleaned["since"] > cleaned["until"]:
            self.add_error("until", "must be on or after From")
        return cleaned

    def apply(self, events: QuerySet) -> QuerySet:
        data = self.cleaned_data
        if data.get("who"):
            events = events.filter(actor_name__iexact=data["who"].strip())
        if data.get("what"):
            events = events.filter(action=data["what"].strip())
        zone = timezone.get_current_timezone()
        if data.get("since"):
            start = datetime.datetime.combine(data["since"], datetime.time.min, tzinfo=zone)
            events = events.filter(created_at__gte=start)
        if data.get("until"):
            end = datetime.datetime.combine(
                data["until"] + datetime.timedelta(days=1), datetime.time.min, tzinfo=zone
            )
            events = events.filter(created_at__lt=end)
        return events

    def query(self) -> dict:
        """The filters as the URL carries them (for the pages' and the export's links)."""
        raw = {"who": self.data.get("who", ""), "what": self.data.get("what", "")}
        raw["from"], raw["to"] = self.data.get("since", ""), self.data.get("until", "")
        return {key: value for key, value in raw.items() if value}

    def described(self) -> dict:
        return {key: value for key, value in self.query().items()}


class Scope:
    """Whose events the user may read: one workspace's (owners and admins), or, for site
    staff, every event (optionally one workspace's, `?workspace=`)."""

    def __init__(self, request: HttpRequest) -> None:
        self.workspace: Workspace | None = None
        self.everything = False
        if request.user.is_staff and not request.GET.get("workspace"):
            self.everything = True
            return
        if request.user.is_staff:
            self.workspace = Workspace.objects.filter(id=_int(request.GET.get("workspace"))).first()
            if self.workspace is not None:
                return
        self.workspace = current_workspace(request)  # NoWorkspace: a 404 page
        membership_for(request.user, self.workspace.id, "audit.read")  # Forbidden: a 403 page

    def events(self) -> QuerySet:
        """The workspace's events, and the failed logins and lockouts (events of no
        workspace) of usernames that are its members'."""
        events = AuditEvent.objects.order_by("-created_at", "-id")
        if self.everything:
            return events
        members = Membership.objects.filter(workspace=self.workspace).values("user__username")
        logins = Q(workspace=None, action__in=LOGIN_ACTIONS, actor_name__in=members)
        return events.filter(Q(workspace=self.workspace) | logins)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def refused(request: HttpRequest, status: int, message: str) -> HttpResponse:
    return render(request, "playground/audit.html", {"refusal": message}, status=status)


def scoped(request: HttpRequest) -> Scope | HttpResponse:
    try:
        return Scope(request)
    except NoWorkspace as exc:
        return refused(request, 404, str(exc))
    except Forbidden as exc:
        return refused(request, 403, str(exc))


@page("audit.read")
@require_safe
def audit_log(request: HttpRequest) -> HttpResponse:
    scope = scoped(request)
    if isinstance(scope, HttpResponse):
        return scope
    filters = Filters(request.GET)
    valid = filters.is_valid()
    events = filters.apply(scope.events()) if valid else scope.events().none()
    paginator = Paginator(events.select_related(None), PAGE_SIZE)
    page_obj = paginator.get_page(request.GET.get("page"))
    rows = [
        {
            "event": event,
            "what": ACTIONS.get(event.action, event.action),
            "details": describe(event),
            "target": " ".join(filter(None, [event.target_type, event.target_name])),
        }
        for event in page_obj.object_list
    ]
    known = set(ACTIONS) | set(scope.events().order_by().values_list("action", flat=True).distinct())
    context = {
        "scope": scope,
        "filters": filters,
        "query": filters.query(),
        "rows": rows,
        "page_obj": page_obj,
        "actions": sorted((name, ACTIONS.get(name, name)) for name in known),
        "workspaces": Workspace.objects.order_by("name") if request.user.is_staff else [],
    }
    return render(request, "playground/audit.html", context, status=200 if valid else 400)


class _Echo:
    """A file whose write returns what it was given: csv.writer then yields each line."""

    def write(self, value: str) -> str:
        return value


DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula: one beginning with = + - @ (or a
    tab or carriage return) is prefixed with a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(DANGEROUS) else text


HEADER = ["when", "who", "what", "action", "workspace", "target type", "target id", "target", "details", "ip"]


def csv_lines(events: QuerySet) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(HEADER)
    for event in events.iterator(chunk_size=500):
        row = [
            event.created_at.isoformat(),
            event.actor_name,
            ACTIONS.get(event.action, event.action),
            event.action,
            event.workspace_name,
            event.target_type,
            event.target_id,
            event.target_name,
            describe(event),
            event.ip or "",
        ]
        yield writer.writerow([cell(value) for value in row])


@page("audit.read")
@require_safe
def audit_export(request: HttpRequest) -> HttpResponse:
    scope = scoped(request)
    if isinstance(scope, HttpResponse):
        return scope
    filters = Filters(request.GET)
    if not filters.is_valid():
        errors = "; ".join(f"{name}: {' '.join(e)}" for name, e in filters.errors.items())
        return HttpResponse(f"Bad filter: {errors}", status=400, content_type="text/plain; charset=utf-8")
    export = audit.record(
        "export.downloaded",
        request=request,
        workspace=scope.workspace,
        target_name="audit log",
        export="audit log (CSV)",
        **({"filters": filters.described()} if filters.query() else {}),
    )
    # The log as it stood when the export was asked for (not the export's own line).
    events = filters.apply(scope.events()).filter(id__lt=export.id)
    response = StreamingHttpResponse(csv_lines(events), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
    return response


def nav(request: HttpRequest) -> dict:
    """Template context for every page: whether the top bar shows "Audit log" (site staff,
    or an owner or admin of the workspace the user is working in). Read lazily."""

    def can_read_audit() -> bool:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return False
        if user.is_staff:
            return True
        memberships = Membership.objects.filter(user=user).order_by("id")
        wanted = request.session.get("workspace") if hasattr(request, "session") else None
        chosen = next((m for m in memberships if m.workspace_id == wanted), None) or memberships.first()
        return chosen is not None and allows(chosen.role, "audit.read")

    return {"can_read_audit": can_read_audit}

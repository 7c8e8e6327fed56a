"""Share links: a read-only link to one conversation's transcript.

Its creator (or an owner or admin: "conversation.write") creates a link, optionally
expiring, lists the conversation's links and revokes them (`share_links`, `share_link`;
both recorded in the audit log, "conversation.shared" and "share_link.revoked"). The
token, `secrets.token_urlsafe(32)`, is shown once, in the answer that creates it; only its
digest is stored (models.token_digest).

`/s/<token>/` (`shared`) shows the transcript as of now and the runs still going;
`/s/<token>/transcript.json` (`shared_transcript`) is what the page polls. Anyone with the
link may open it when the workspace allows public links (Workspace.public_share_links);
otherwise only its logged-in members (others are sent to log in, or told in words that the
link is for members). A revoked or expired link, or one to a deleted conversation, answers
410 in words; an unknown token 404. The shared transcript is built from an explicit
allow-list of fields (`shared_dict`): never a key, the provider's base URL or name, the
request's headers or body, raw frames, timings or errors' upstream text.
"""

from __future__ import annotations

import datetime
import secrets

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from playground import audit
from playground.access import PUBLIC, conversation_for, declare
from playground.api import api
from playground.models import Conversation, Membership, Run, ShareLink, token_digest
from playground.validation import Invalid

MAX_EXPIRY_DAYS = 365


def link_dict(link: ShareLink) -> dict:
    """A link as the conversation's list shows it (never its token: only its digest is kept)."""
    return {
        "id": link.id,
        "created_by": link.created_by.get_username() if link.created_by else None,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat() if link.expires_at else None,
        "revoked_at": link.revoked_at.isoformat() if link.revoked_at else None,
        "active": link.revoked_at is None and (link.expires_at is None or link.expires_at > timezone.now()),
    }


def expiry_from(data: dict) -> datetime.datetime | None:
    """`expires_in_days`: a whole number of days from now, 1 to MAX_EXPIRY_DAYS, or null/absent
    for a link that does not expire."""
    days = data.get("expires_in_days")
    if days is None or days == "":
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise Invalid(
            {"expires_in_days": f"must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}, or null"}
        )
    return timezone.now() + datetime.timedelta(days=days)


@api(methods={"GET": "conversation.write", "POST": "conversation.write"}, json=True)
def share_links(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conversation = conversation_for(request.user, conversation_id, "conversation.write")
    if request.method == "POST":
        data = request.json()
        unknown = sorted(set(data) - {"expires_in_days"})
        if unknown:
            raise Invalid(dict.fromkeys(unknown, "is not a share link field"))
        expires_at = expiry_from(data)
        token = secrets.token_urlsafe(32)
        link = ShareLink.objects.create(
            conversation=conversation,
            token_hash=token_digest(token),
            created_by=request.user,
            expires_at=expires_at,
        )
        audit.record(
            "conversation.shared",
            request=request,
            workspace=conversation.workspace,
            target=conversation,
            link=link.id,
            expires=expires_at.isoformat(timespec="minutes") if expires_at else "never",
        )
        url = request.build_absolute_uri(reverse("shared", kwargs={"token": token}))
        return JsonResponse({**link_dict(link), "url": url}, status=201)
    links = conversation.share_links.select_related("created_by").order_by("-created_at", "-id")
    return JsonResponse({"links": [link_dict(link) for link in links]})


@api(methods={"DELETE": "conversation.write"})
def share_link(request: HttpRequest, share_link_id: int) -> JsonResponse:
    """Revoke a link (it stays listed, revoked: the audit log names it)."""
    link = ShareLink.objects.filter(id=share_link_id).select_related("created_by").first()
    if link is None:
        raise Http404
    conversation = conversation_for(request.user, link.conversation_id, "conversation.write")
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
        audit.record(
            "share_link.revoked",
            request=request,
            workspace=conversation.workspace,
            target=conversation,
            link=link.id,
        )
    return JsonResponse(link_dict(link))


# -------------------------------------------------------------------- the shared page


class Closed(Exception):
    """The link does not open: `status` and why, in words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class LoginNeeded(Exception):
    """The workspace's links are for its members: log in first."""


def open_link(request: HttpRequest, token: str) -> Conversation:
    """The conversation `token` opens for this request, or Closed / LoginNeeded."""
    link = (
        ShareLink.objects.filter(token_hash=token_digest(token))
        .select_related("conversation__workspace", "conversation__creator")
        .first()
    )
    if link is None:
        raise Closed(404, "This share link does not exist. Check that it was copied whole.")
    if link.revoked_at is not None:
        raise Closed(410, "This share link was revoked: ask whoever shared it for a new one.")
    if link.expires_at is not None and link.expires_at <= timezone.now():
        when = timezone.localtime(link.expires_at).strftime("%Y-%m-%d %H:%M %Z")
        raise Closed(410, f"This share link expired on {when}: ask whoever shared it for a new one.")
    conversation = link.conversation
    if conversation.deleted_at is not None:
        raise Closed(410, "The conversation this link shared was deleted.")
    workspace = conversation.workspace
    if not workspace.public_share_links:
        if not request.user.is_authenticated:
            raise LoginNeeded
        if not Membership.objects.filter(workspace=workspace, user=request.user).exists():
            raise Closed(404, "This share link is only for members of its workspace.")
    return conversation


def shared_dict(conversation: Conversation) -> dict:
    """The shared transcript, field by allowed field: the messages in order and the runs
    still going (who started them, the model, their status)."""
    messages = []
    for message in conversation.messages.filter(in_history=True).order_by("position", "id"):
        item = {
            "id": message.id,
            "position": message.position,
            "role": message.role,
            "content": _content(message.content),
            "in_history": message.in_history,
        }
        if message.name:
            item["name"] = message.name
        if message.tool_call_id:
            item["tool_call_id"] = message.tool_call_id
        if message.tool_calls:
            item["tool_calls"] = [_tool_call(call) for call in message.tool_calls if isinstance(call, dict)]
        messages.append(item)
    runs = conversation.runs.filter(hidden=False, status__in=Run.ACTIVE).select_related("user")
    return {
        "title": conversation.title,
        "creator": conversation.creator.get_username() if conversation.creator else None,
        "updated_at": conversation.updated_at.isoformat(),
        "messages": messages,
        "runs": [
            {
                "id": run.id,
                "status": run.status,
                "model": run.model,
                "user": run.user.get_username() if run.user else (run.username or None),
            }
            for run in runs
        ],
    }


def _content(content):
    """A message's content: its text, or its parts (text, and image or video by URL)."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind in ("image_url", "video_url"):
            url = (part.get(kind) or {}).get("url", "") if isinstance(part.get(kind), dict) else ""
            parts.append({"type": kind, kind: {"url": str(url)}})
    return parts


def _tool_call(call: dict) -> dict:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    return {
        "id": str(call.get("id", "")),
        "function": {"name": str(function.get("name", "")), "arguments": str(function.get("arguments", ""))},
    }


def shared(request: HttpRequest, token: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return HttpResponse("Share links are read-only.", status=405, headers={"Allow": "GET, HEAD"})
    try:
        conversation = open_link(request, token)
    except LoginNeeded:
        return redirect_to_login(request.get_full_path())
    except Closed as closed:
        return render(request, "playground/shared.html", {"closed": closed.message}, status=closed.status)
    data = shared_dict(conversation)
    config = {"transcript": reverse("shared-transcript", kwargs={"token": token})}
    response = render(
        request, "playground/shared.html", {"conversation": data, "config": config, "initial": data}
    )
    response["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
    response["X-Robots-Tag"] = "noindex"
    return response


def shared_transcript(request: HttpRequest, token: str) -> JsonResponse:
    if request.method not in ("GET", "HEAD"):
        return JsonResponse(
            {"error": "Share links are read-only."}, status=405, headers={"Allow": "GET, HEAD"}
        )
    try:
        conversation = open_link(request, token)
    except LoginNeeded:
        return JsonResponse({"error": "Log in: this link is for members of its workspace."}, status=401)
    except Closed as closed:
        return JsonResponse({"error": closed.message}, status=closed.status)
    return JsonResponse(
        shared_dict(conversation), headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
    )


declare(shared, {"GET": PUBLIC, "HEAD": PUBLIC})
declare(shared_transcript, {"GET": PUBLIC, "HEAD": PUBLIC})

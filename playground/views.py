from __future__ import annotations

import json
from functools import wraps

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db import connection, transaction
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from playground import relay
from playground.api_errors import declared_length
from playground.capabilities import ProbeBusy, ProbeFailed, apply_profile, probe
from playground.forms import (
    PARAMETERS,
    Invalid,
    build_body,
    clean_model,
    clean_submission,
    clean_title,
    parse_json,
    split_body,
)
from playground.keys import KeyDecryptError
from playground.models import Conversation, Membership, Message, Provider, Run, Workspace, insert, update_of
from playground.snippets import ImportError_, code_for, parse_request
from playground.tokens import content_text
from playground.upstream import UpstreamError, build_headers, list_models, masked_headers


class Refused(Exception):
    """A submission refused for now: `status` (409, 429), a message in plain words, and details."""

    def __init__(self, status: int, message: str, **details) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


class Forbidden(Exception):
    pass


class LoggedOut(Exception):
    pass


def json_error(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def api(view):
    """JSON API views: 401 instead of a login redirect, 403/404 as JSON."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return json_error(401, "Log in first.")
        try:
            return view(request, *args, **kwargs)
        except Forbidden as exc:
            return json_error(403, str(exc) or "Your role does not allow that.")
        except Http404:
            return json_error(404, "Not found, or not in your workspaces.")

    return wrapper


FORM_TYPES = ("multipart/", "application/x-www-form-urlencoded", "text/plain")


def request_body(request: HttpRequest, limit: int | None = None) -> bytes:
    """The raw body of a JSON request, or Invalid: 415 for a form's body, 413 past `limit`
    bytes (PLAYGROUND_MAX_BODY_BYTES unless given), told before reading it when the
    request says its length."""
    if request.content_type.startswith(FORM_TYPES):
        reason = f"must be JSON (Content-Type: application/json), not {request.content_type}"
        raise Invalid({"body": reason}, status=415)
    limit = settings.PLAYGROUND_MAX_BODY_BYTES if limit is None else limit
    declared = declared_length(request)
    raw = b"" if declared > limit else request.read(limit + 1)
    if declared > limit or len(raw) > limit:
        mb = 1024 * 1024
        size = f"{max(declared, len(raw)) / mb:.1f} MB" if declared else f"over {limit / mb:g} MB"
        raise Invalid({"body": f"is {size}; at most {limit / mb:g} MB is accepted here"}, status=413)
    return raw


def read_json(request: HttpRequest, limit: int | None = None) -> dict:
    """A JSON object from the request's body (`request_body`, then `forms.parse_json`), or Invalid."""
    data = parse_json(request_body(request, limit) or b"{}")
    if not isinstance(data, dict):
        raise Invalid({"body": "must be a JSON object"})
    return data


def membership_for(user, workspace_id: int) -> Membership:
    membership = Membership.objects.filter(user=user, workspace_id=workspace_id).first()
    if membership is None:
        raise Http404
    return membership


def conversation_for(user, conversation_id: int, *, write: bool = False, lock: bool = False) -> Conversation:
    """The conversation, if `user` is a member of its workspace: one query, the role
    read alongside. `lock` (inside a transaction) locks its row until the commit."""
    conversation = Conversation.objects.for_member(user.id, conversation_id, lock=lock)
    if conversation is None or conversation.member_role is None:
        raise Http404
    if write and not Membership(role=conversation.member_role).can_run:
        raise Forbidden("Viewers can watch conversations but not change them.")
    return conversation


def may_manage(user, conversation: Conversation) -> bool:
    """Renaming and deleting: the conversation's creator, or an owner or admin of its workspace
    (`conversation` from conversation_for, its `member_role` read)."""
    return conversation.creator_id == user.id or conversation.member_role in (
        Membership.Role.OWNER,
        Membership.Role.ADMIN,
    )


class NoWorkspace(Http404):
    """The user is in no workspace: pages say so (`no_workspace`), the API answers 404."""


def no_workspace(request: HttpRequest) -> HttpResponse:
    return render(request, "playground/no_workspace.html")


def current_workspace(request: HttpRequest) -> Workspace:
    memberships = Membership.objects.filter(user=request.user).select_related("workspace")
    wanted = request.GET.get("workspace") or request.session.get("workspace")
    chosen = next((m for m in memberships if str(m.workspace_id) == str(wanted)), None)
    chosen = chosen or memberships.order_by("id").first()
    if chosen is None:
        raise NoWorkspace("You are not a member of any workspace; ask an admin to add you.")
    if request.session.get("workspace") != chosen.workspace_id:  # else no session write
        request.session["workspace"] = chosen.workspace_id
    return chosen.workspace


# ---------------------------------------------------------------------------- the page


@login_required
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
        "canRun": membership.can_run,
        "canAdmin": membership.role in (Membership.Role.OWNER, Membership.Role.ADMIN),
        "providers": [
            p.to_dict() for p in workspace.providers.filter(enabled=True).order_by("-is_demo", "name")
        ],
        "parameters": PARAMETERS,
    }
    workspaces = Workspace.objects.filter(memberships__user=request.user).order_by("name")
    return render(
        request,
        "playground/index.html",
        {"config": config, "workspace": workspace, "workspaces": workspaces},
    )


# ---------------------------------------------------------------------------- conversations


@require_http_methods(["GET", "POST"])
@api
def conversations(request: HttpRequest) -> JsonResponse:
    workspace = current_workspace(request)
    if request.method == "POST":
        if not membership_for(request.user, workspace.id).can_run:
            raise Forbidden("Viewers cannot start conversations.")
        data = read_json_or_400(request)
        if isinstance(data, JsonResponse):
            return data
        try:
            title = clean_title(data.get("title")) or "New conversation"
        except Invalid as exc:
            return json_error(400, str(exc), fields=exc.errors)
        conversation = Conversation.objects.create(workspace=workspace, creator=request.user, title=title)
        return JsonResponse(conversation.to_dict(), status=201)
    query = request.GET.get("q", "").strip()
    if query:
        return JsonResponse({"conversations": search_conversations(workspace, query)})
    items = workspace.conversations.select_related("creator")[:500]
    return JsonResponse({"conversations": [c.to_dict() for c in items]})


def excerpt(text: str, query: str, width: int = 40) -> str:
    text = " ".join(text.split())
    at = text.lower().find(query.lower())
    if at < 0:
        return text[: 2 * width]
    start, end = max(0, at - width), at + len(query) + width
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def search_conversations(workspace: Workspace, query: str, limit: int = 100) -> list[dict]:
    """Conversations whose title or any message's text holds `query` (case-insensitive).

    Message content is JSON: the database sees a string as its JSON text, where quotes
    and newlines are escaped (and, in SQLite, non-ASCII characters too). Each spelling of
    the query is looked for, and each hit is confirmed on the decoded text.
    """
    # As typed; JSON-escaped with \uXXXX (SQLite's text); JSON-escaped keeping Unicode (jsonb's text).
    spellings = Q()
    for spelling in {query, json.dumps(query)[1:-1], json.dumps(query, ensure_ascii=False)[1:-1]}:
        spellings |= Q(content__icontains=spelling)
    hits: dict[int, str] = {}
    candidates = Message.objects.filter(spellings, conversation__workspace=workspace).order_by(
        "conversation_id", "position", "choice_index"
    )
    for conv_id, content in candidates.values_list("conversation_id", "content").iterator():
        text = content_text(content)
        if conv_id not in hits and query.lower() in text.lower():
            hits[conv_id] = excerpt(text, query)
    found = workspace.conversations.filter(Q(title__icontains=query) | Q(id__in=list(hits)))
    return [{**c.to_dict(), "match": hits.get(c.id, "")} for c in found.select_related("creator")[:limit]]


@require_POST
@api
def import_request(request: HttpRequest) -> JsonResponse:
    """A pasted JSON body or curl command becomes a new conversation plus the page's fields."""
    workspace = current_workspace(request)
    if not membership_for(request.user, workspace.id).can_run:
        raise Forbidden("Viewers cannot import requests.")
    data = read_json_or_400(request)
    if isinstance(data, JsonResponse):
        return data
    try:
        parsed = parse_request(str(data.get("text", "")))
    except ImportError_ as exc:
        return json_error(400, str(exc), fields={"text": str(exc)})
    fields = split_body(parsed["body"])
    with transaction.atomic():
        conv = Conversation.objects.create(
            workspace=workspace,
            creator=request.user,
            title=title_from(fields["message"] or "Imported request"),
        )
        sync_system_prompt(conv, fields["system"], [])
        for position, message in enumerate(fields.pop("history"), start=1):
            Message.objects.create(conversation=conv, position=position, **message)
    return JsonResponse({"conversation": conv.to_dict(), **fields, "url": parsed["url"]}, status=201)


def read_json_or_400(request: HttpRequest) -> dict | JsonResponse:
    """`read_json`, or the refusal to answer (400, 413 or 415, naming the field)."""
    try:
        return read_json(request)
    except Invalid as exc:
        return json_error(exc.status, str(exc), fields=exc.errors)


@require_http_methods(["GET", "PATCH", "DELETE"])
@api
def conversation(request: HttpRequest, conversation_id: int) -> JsonResponse:
    conv = conversation_for(request.user, conversation_id, write=request.method != "GET")
    if request.method != "GET" and not may_manage(request.user, conv):
        raise Forbidden("Only the conversation's creator, or an owner or admin of its workspace, may.")
    if request.method == "DELETE":
        conv.delete()
        announce(conversation_id, deleted=True)
        return JsonResponse({"deleted": conversation_id})
    if request.method == "PATCH":
        data = read_json_or_400(request)
        if isinstance(data, JsonResponse):
            return data
        try:
            title = clean_title(data.get("title"))
        except Invalid as exc:
            return json_error(400, str(exc), fields=exc.errors)
        if not title:
            return json_error(400, "title: cannot be empty", fields={"title": "cannot be empty"})
        conv.title = title
        conv.save(update_fields=["title"])
        announce(conv.id, title=conv.title)
        return JsonResponse(conv.to_dict())
    return JsonResponse(transcript(conv))


def announce(conversation_id: int, *, wait: bool = True, **change) -> None:
    """Tell everyone watching a conversation that its title or messages changed, or it is gone.

    `wait=False` hands the event to the server loop and returns at once, never raising
    (a submission whose run has started must not fail over it).
    """
    group = f"conversation-{conversation_id}"
    event = {"type": "conversation.changed", "conversation": conversation_id, **change}
    if wait:
        async_to_sync(get_channel_layer().group_send)(group, event)
    else:
        relay.publish_soon(group, event)


def transcript(conv: Conversation) -> dict:
    runs = conv.runs.filter(hidden=False).select_related("user")
    return {
        **conv.to_dict(),
        "messages": [m.to_dict() for m in conv.messages.all()],
        "runs": [r.to_dict() for r in runs],
    }


# ---------------------------------------------------------------------------- runs


def submit_run(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """Validate, store the user's message and a queued run, and start the relay.

    A synchronous view: with the middleware (playground.middleware.ASGIHandler), it
    all runs in one trip to a thread. As an async view behind Django's own handler
    it took five, each a wait behind the answers the loop relays.
    """
    if request.method != "POST":
        return json_error(405, "POST a run.")
    demo = relay.Target(demo_base_url(request), "", {"Host": request.get_host()})
    try:
        relay.ensure_started_from_thread()  # the new run names this process as its owner
        prepared = prepare_run(request.user, conversation_id, request_body(request), demo)
    except LoggedOut:
        return json_error(401, "Log in first.")
    except Invalid as exc:
        return json_error(exc.status, str(exc), fields=exc.errors)
    except Forbidden as exc:
        return json_error(403, str(exc))
    except Http404:
        return json_error(404, "Not found, or not in your workspaces.")
    except relay.RelayBusy as exc:
        return json_error(503, exc.message, busy=True)
    except Refused as exc:
        return json_error(exc.status, exc.message, **exc.details)
    run, target, slot, messages, title = prepared
    run_dict = run.to_dict()
    relay.start_run(run, run_dict, target, slot, messages)
    if title is not None:  # the first message named the conversation
        announce(conversation_id, wait=False, title=title)
    return JsonResponse({"run": run_dict, "messages": messages}, status=201)


def prepare_run(user, conversation_id: int, raw: bytes, demo: relay.Target):
    """Check, store the new turn and a queued run: one transaction of 6–7 statements.

    Each query here is a wait for the GIL when the event loop is busy relaying
    other answers, so the conversation and the caller's role come in one query
    (locking the row: one submission at a time per conversation), and its
    messages in one more, which give the system prompt, the next position and the
    history sent upstream.
    """
    # The session and the user load here, before the transaction: on SQLite it holds
    # the database's write lock from its start.
    if not user.is_authenticated:
        raise LoggedOut()
    slot = None
    try:
        with transaction.atomic():
            conv = conversation_for(user, conversation_id, write=True, lock=True)
            data = clean_submission(parse_json(raw or b"null"))
            provider = Provider.objects.usable(data["provider"], conv.workspace_id)
            if provider is None:
                raise Invalid({"provider": "is not an enabled provider of this workspace"})
            try:
                api_key = provider.get_api_key()
            except KeyDecryptError as exc:
                raise Invalid({"provider": str(exc)}) from None
            # The Demo relay is this server: its own address, and a Host header it accepts.
            base_url, headers = (demo.base_url, demo.headers) if provider.is_demo else (provider.base_url, {})
            target = relay.Target(base_url, api_key, {**provider.extra_headers, **headers}, provider.is_demo)
            workspace = check_stream_caps(user, conv)
            slot = relay.reserve_slot()
            run, messages, title = create_run(user, conv, provider, data, target, workspace)
    except BaseException:
        if slot is not None:  # the run was not stored (its commit included)
            slot.release()
        raise
    return run, target, slot, messages, title


def check_stream_caps(user, conv: Conversation) -> Workspace:
    """Refuse a run while the conversation has one streaming (409), or while the user or the
    workspace has as many active runs as its cap (429); the conversation's workspace.

    Inside prepare_run's transaction, with the conversation's row locked. The workspace's
    row, then the user's, are locked until the commit, so submissions counted here run one
    at a time per workspace and per user, whichever process takes them.
    """
    from django.conf import settings

    workspace = Workspace.objects.select_for_update().get(id=conv.workspace_id)
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
    active = Run.objects.filter(status__in=Run.ACTIVE).aggregate(
        conversation=Count("id", filter=Q(conversation_id=conv.id)),
        user=Count("id", filter=Q(user_id=user.pk)),
        workspace=Count("id", filter=Q(workspace_id=workspace.id)),
    )
    if active["conversation"]:
        raise Refused(409, "This conversation is still answering; stop it or wait.", streaming=True)
    caps = [
        ("user", settings.PLAYGROUND_MAX_STREAMS_PER_USER, "you have"),
        ("workspace", settings.PLAYGROUND_MAX_STREAMS_PER_WORKSPACE, "this workspace has"),
    ]
    for cap, limit, who in caps:
        if 0 < limit <= active[cap]:  # 0: no cap
            raise Refused(
                429,
                f"Too many answers streaming: {who} {active[cap]} running, and the {cap} limit is "
                f"{limit}. Stop one or wait for it to finish.",
                cap=cap,
                active=active[cap],
                limit=limit,
            )
    return workspace


def create_run(
    user, conv: Conversation, provider: Provider, data: dict, target: relay.Target, workspace: Workspace
):
    """Called inside prepare_run's transaction, with the conversation's row locked."""
    existing = conv.ordered_messages()
    changed = sync_system_prompt(conv, data["system"], existing)
    position = max((m.position for m in existing), default=0) + 1
    new = []
    if data["message"] != "":
        new.append(
            insert(
                Message(conversation=conv, position=position, role=Message.Role.USER, content=data["message"])
            )
        )
        position += 1
    profile = provider.capabilities or {}
    reasoning_field = None
    if data["send_reasoning"]:
        reasoning_field = profile.get("reasoning_field") or "reasoning_content"
    params, notes = apply_profile(profile, data["params"], data["extra_body"])
    body = build_body(
        data["model"], conv.history(reasoning_field, [*existing, *new]), params, data["extra_body"]
    )
    headers = masked_headers(build_headers(target.api_key, target.headers, stream=bool(body.get("stream"))))
    run = Run(
        base_url=target.base_url,
        conversation=conv,
        workspace=workspace,
        workspace_name=workspace.name,
        user=user,
        username=user.get_username(),
        provider=provider,
        provider_name=provider.name,
        model=data["model"],
        request_body=body,
        request_headers=headers,
        param_notes=notes,
        position=position,
        heartbeat_at=timezone.now(),
        owner=relay.process.channel,
    )
    title = None
    if conv.title == "New conversation" and data["message"]:
        conv.title = title = title_from(data["message"])
    run.conversation_title = conv.title
    insert(run)
    conv.updated_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(*update_of(conv, ["title", "updated_at"]))
    return run, [m.to_dict() for m in [*changed, *new]], title


def sync_system_prompt(conv: Conversation, system: str, messages: list[Message]) -> list[Message]:
    """The System prompt box edits the conversation's leading system message.

    `messages` are the conversation's, in order; they are kept in step with the change.
    """
    current = next((m for m in messages if m.position == 0 and m.role == Message.Role.SYSTEM), None)
    if not system:
        if current:
            current.delete()
            messages.remove(current)
        return []
    if current and current.content == system:
        return []
    if current:
        current.content = system
        current.save(update_fields=["content"])
        return [current]
    current = Message.objects.create(conversation=conv, position=0, role=Message.Role.SYSTEM, content=system)
    messages.insert(0, current)
    return [current]


def title_from(content) -> str:
    text = " ".join(content_text(content).split())
    return (text[:60] + "…") if len(text) > 60 else (text or "New conversation")


def demo_base_url(request: HttpRequest) -> str:
    """The Demo relay is this server: reach it on the address this request came in on."""
    from django.conf import settings

    if settings.DEMO_BASE_URL:
        return settings.DEMO_BASE_URL
    server = getattr(request, "scope", {}).get("server")
    if server and server[1]:
        host = server[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "", None) else ("::1" if host == "::" else host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{server[1]}/demo/v1"
    return request.build_absolute_uri("/demo/v1")


async def stop_run(request: HttpRequest, run_id: int) -> JsonResponse:
    if request.method != "POST":
        return json_error(405, "POST to stop a run.")
    user = await request.auser()
    if not user.is_authenticated:
        return json_error(401, "Log in first.")
    try:
        run = await sync_to_async(run_for)(user, run_id)
    except Forbidden as exc:
        return json_error(403, str(exc))
    except Http404:
        return json_error(404, "Not found, or not in your workspaces.")
    stopping = await relay.stop_run(run)
    if not stopping:  # it may have just been found stale and marked interrupted
        await run.arefresh_from_db(fields=["status"])
        if run.status == Run.Status.INTERRUPTED:
            return json_error(
                409,
                "This run was interrupted: the server process running it stopped. "
                "The text saved up to then is kept; send again to continue.",
                run=run_id,
                interrupted=True,
            )
    return JsonResponse({"run": run_id, "stopping": stopping}, status=202 if stopping else 200)


def run_for(user, run_id: int) -> Run:
    run = get_object_or_404(Run.objects.select_related("conversation"), id=run_id)
    conversation_for(user, run.conversation_id, write=True)
    return run


@require_GET
@api
def run_detail(request: HttpRequest, run_id: int) -> JsonResponse:
    run = get_object_or_404(Run.objects.select_related("user"), id=run_id)
    conversation_for(request.user, run.conversation_id)
    body = run.sent_body()
    return JsonResponse(
        {
            **run.to_dict(),
            "base_url": run.base_url,
            "request_body": body,
            "request_headers": run.request_headers,
            "response_status": run.response_status,
            "response_headers": run.response_headers,
            "raw_frames": run.raw_frames,
            "param_notes": run.param_notes,
            "frames_dropped": run.frames_dropped,
            "code": code_for(run.base_url, body, run.request_headers),
        }
    )


# ---------------------------------------------------------------------------- providers


@require_POST
@api
def probe_provider(request: HttpRequest, provider_id: int) -> JsonResponse:
    """Probe a provider with small requests, one per feature, and store what it honoured."""
    provider = get_object_or_404(Provider, id=provider_id, enabled=True)
    if not membership_for(request.user, provider.workspace_id).can_run:
        raise Forbidden("Viewers cannot probe providers: probing spends tokens.")
    data = read_json_or_400(request)
    if isinstance(data, JsonResponse):
        return data
    errors = {}
    model = clean_model(data.get("model"), errors)
    if errors:
        return json_error(400, f"model: {errors['model']}", fields=errors)
    try:
        api_key = provider.get_api_key()
    except KeyDecryptError as exc:
        return json_error(400, str(exc))
    if provider.is_demo:
        target = relay.Target(demo_base_url(request), api_key, {"Host": request.get_host()}, is_demo=True)
    else:
        target = relay.Target(provider.base_url, api_key, provider.extra_headers)
    try:
        profile = probe(target, model, previous=provider.capabilities)
    except ProbeBusy as exc:
        return json_error(503, str(exc), busy=True)
    except ProbeFailed as exc:
        return json_error(502, str(exc))
    provider.capabilities = profile
    provider.save(update_fields=["capabilities"])
    return JsonResponse({"provider": provider.id, "capabilities": profile})


@require_http_methods(["PATCH"])
@api
def provider_profile(request: HttpRequest, provider_id: int) -> JsonResponse:
    """Workspace owners and admins choose whether rejected parameters are left out."""
    provider = get_object_or_404(Provider, id=provider_id)
    role = membership_for(request.user, provider.workspace_id).role
    if role not in (Membership.Role.OWNER, Membership.Role.ADMIN):
        raise Forbidden("Only workspace owners and admins change a provider's profile.")
    data = read_json_or_400(request)
    if isinstance(data, JsonResponse):
        return data
    if not isinstance(data.get("omit_rejected"), bool):
        reason = "must be true or false"
        return json_error(400, f"omit_rejected: {reason}", fields={"omit_rejected": reason})
    provider.capabilities = {**provider.capabilities, "omit_rejected": data["omit_rejected"]}
    provider.save(update_fields=["capabilities"])
    return JsonResponse({"provider": provider.id, "capabilities": provider.capabilities})


@require_GET
@api
def provider_models(request: HttpRequest, provider_id: int) -> JsonResponse:
    provider = get_object_or_404(Provider, id=provider_id)
    membership_for(request.user, provider.workspace_id)
    if provider.is_demo:
        return JsonResponse({"models": provider.to_dict()["models"]})
    try:
        models = list_models(provider.base_url, provider.get_api_key(), provider.extra_headers)
    except UpstreamError as exc:
        return JsonResponse({"models": [], "error": exc.message})
    return JsonResponse({"models": models})

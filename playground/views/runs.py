"""Runs: submit one (the user's message and a queued run, then the relay streams the
answer), stop one, read one's full record for the inspector."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone

from playground import relay
from playground.access import LoggedOut, conversation_for, run_for
from playground.api import Refused, api, json_error, request_body
from playground.capabilities import apply_profile
from playground.keys import KeyDecryptError
from playground.models import Conversation, Message, Provider, Run, Workspace
from playground.snippets import code_for
from playground.transcripts import announce, sync_system_prompt, title_from
from playground.upstream import build_headers, masked_headers
from playground.validation import Invalid, build_body, clean_submission, parse_json


@api(methods={"POST": "conversation.write"})
def submit_run(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """Validate, store the user's message and a queued run, and start the relay.

    A synchronous view: with the middleware (playground.server.request_threads), it
    all runs in one trip to a thread. As an async view behind Django's own handler
    it took five, each a wait behind the answers the loop relays.
    """
    demo = relay.Target(demo_base_url(request), "", {"Host": request.get_host()})
    raw = request_body(request)
    relay.ensure_started_from_thread()  # the new run names this process as its owner
    run, target, slot, messages, title = prepare_run(request.user, conversation_id, raw, demo)
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
            conv = conversation_for(user, conversation_id, "conversation.write", lock=True)
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
            Message.objects.create(
                conversation=conv, position=position, role=Message.Role.USER, content=data["message"]
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
    title = None
    if conv.title == "New conversation" and data["message"]:
        conv.title = title = title_from(data["message"])
    run = Run.objects.create(
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
        conversation_title=conv.title,
    )
    conv.updated_at = timezone.now()
    conv.save(update_fields=["title", "updated_at"])
    return run, [m.to_dict() for m in [*changed, *new]], title


def demo_base_url(request: HttpRequest) -> str:
    """The Demo relay is this server: reach it on the address this request came in on."""
    if settings.DEMO_BASE_URL:
        return settings.DEMO_BASE_URL
    server = getattr(request, "scope", {}).get("server")
    if server and server[1]:
        host = server[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "", None) else ("::1" if host == "::" else host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{server[1]}/demo/v1"
    return request.build_absolute_uri("/demo/v1")


@api(methods={"POST": "conversation.write"})
async def stop_run(request: HttpRequest, run_id: int) -> JsonResponse:
    run = await sync_to_async(run_for)(await request.auser(), run_id, "conversation.write")
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


@api(methods={"GET": "conversation.read"})
def run_detail(request: HttpRequest, run_id: int) -> JsonResponse:
    run = get_object_or_404(Run.objects.select_related("user"), id=run_id)
    if run.conversation_id is None:
        raise Http404
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

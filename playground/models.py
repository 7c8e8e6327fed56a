from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from playground import keys, netguard
from playground.upstream.http import wire_json

DEMO_PROVIDER_NAME = "Demo"
DEMO_MODELS = ("demo-echo", "demo-lorem")


class Workspace(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # What a new conversation is (Conversation.Visibility); its creator can change it.
    default_visibility = models.CharField(max_length=10, default="shared")
    # Whether a share link opens for anyone who has it (else only for logged-in members).
    public_share_links = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.name

    def role_of(self, user) -> str | None:
        membership = self.memberships.filter(user=user).first()
        return membership.role if membership else None


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        VIEWER = "viewer"

    workspace = models.ForeignKey(Workspace, models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="one_membership_per_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"

    @property
    def can_run(self) -> bool:
        return self.role != self.Role.VIEWER


def validate_base_url(value: str) -> None:
    """Where a relay may be: see playground.netguard."""
    netguard.check_base_url(value)


def validate_extra_headers(value: Any) -> None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValidationError("Extra headers must be an object of header name to string value.")
    if any(k.lower() == "authorization" for k in value):
        raise ValidationError("Put the key in the API key field, not in extra headers.")


PRICE_KEYS = ("input", "output", "cached_input")


def validate_prices(value: Any) -> None:
    """{"model or *": {"input": USD per 1M tokens, "output": …, "cached_input": …}}."""
    problem = (
        'Prices must be an object of model name (or "*") to {input, output[, cached_input]} '
        "in USD per 1M tokens."
    )
    if not isinstance(value, dict):
        raise ValidationError(problem)
    for model, price in value.items():
        if not isinstance(price, dict) or not {"input", "output"} <= set(price) <= set(PRICE_KEYS):
            raise ValidationError(f"{model}: {problem}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in price.values()):
            raise ValidationError(f"{model}: prices must be numbers of dollars, 0 or more.")


def cost_of(prices: dict, model: str, prompt: int | None, completion: int | None, cached: int | None):
    """The USD cost of one request, or None when no price is set for `model` (nor "*")."""
    price = (prices.get(model) or prices.get("*")) if isinstance(prices, dict) else None
    if not price or prompt is None or completion is None:
        return None
    cached = min(cached or 0, prompt) if "cached_input" in price else 0
    dollars = (
        (prompt - cached) * price["input"]
        + cached * price.get("cached_input", 0)
        + completion * price["output"]
    ) / 1_000_000
    return Decimal(str(round(dollars, 8)))


class ProviderManager(models.Manager):
    def usable(self, provider_id: int, workspace_id: int) -> Provider | None:
        """The provider if it is an enabled one of the workspace, else None."""
        return self.filter(id=provider_id, workspace_id=workspace_id, enabled=True).first()


class Provider(models.Model):
    """A relay: base URL plus an encrypted API key that members use but never see."""

    workspace = models.ForeignKey(Workspace, models.CASCADE, related_name="providers")
    name = models.CharField(max_length=100)
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="Up to and including /v1, e.g. https://api.example.com/v1. "
        "Empty for the built-in Demo relay.",
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    key_hint = models.CharField(max_length=20, blank=True, editable=False)
    extra_headers = models.JSONField(default=dict, blank=True, validators=[validate_extra_headers])
    enabled = models.BooleanField(default=True)
    # What it does with each parameter, its reasoning field, whether it streams usage:
    # filled by the Probe action (playground.capabilities), editable by admins.
    capabilities = models.JSONField(default=dict, blank=True)
    prices = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_prices],
        help_text='USD per 1M tokens, per model or "*": {"gpt-4o": {"input": 2.5, "output": 10, '
        '"cached_input": 1.25}}. Runs record their cost from these.',
    )
    is_demo = models.BooleanField(default=False, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ProviderManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_provider_name")]

    def __str__(self) -> str:
        return self.name

    def set_api_key(self, api_key: str) -> None:
        self.api_key_encrypted = keys.encrypt(api_key) if api_key else ""
        self.key_hint = keys.mask(api_key)

    def get_api_key(self) -> keys.Secret:
        """The decrypted key, masked in any repr; `.reveal()` gives its text."""
        return keys.Secret(keys.decrypt(self.api_key_encrypted) if self.api_key_encrypted else "")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "base_url": self.base_url or "(built-in)",
            "key_hint": self.key_hint,
            "enabled": self.enabled,
            "is_demo": self.is_demo,
            "models": list(DEMO_MODELS) if self.is_demo else [],
            "capabilities": self.capabilities,
        }


class ConversationManager(models.Manager):
    def for_member(self, user_id: int | None, conversation_id: int, lock: bool = False):
        """The conversation, its `member_role` the user's role in its workspace (None: not
        a member). `lock`, inside a transaction, locks its row until the commit
        (`select_for_update`: where the database can; SQLite's transactions here take the
        write lock as they begin). Outside a transaction a locking read raises
        TransactionManagementError."""
        membership = Membership.objects.filter(user_id=user_id, workspace_id=OuterRef("workspace_id"))
        role = membership.values("role")
        found = self.filter(id=conversation_id).annotate(member_role=Subquery(role[:1])).order_by()
        if lock:
            found = found.select_for_update(of=("self",))
        return next(iter(found), None)


class Conversation(models.Model):
    class Visibility(models.TextChoices):
        PRIVATE = "private"  # its creator, and the workspace's owners and admins
        SHARED = "shared"  # every member of the workspace

    workspace = models.ForeignKey(Workspace, models.CASCADE, related_name="conversations")
    creator = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="conversations"
    )
    title = models.CharField(max_length=200, default="New conversation")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.SHARED)
    # In the trash since then (restorable for PLAYGROUND_TRASH_DAYS); None: not deleted.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The Compare session this conversation is a column of ("": none); the list shows
    # a comparison's columns as one entry.
    comparison = models.CharField(max_length=36, blank=True, default="", db_index=True)

    objects = ConversationManager()

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title

    def history(
        self, reasoning_field: str | None = None, messages: list[Message] | None = None
    ) -> list[dict]:
        """The message list to send upstream, in the OpenAI wire shape.

        With `reasoning_field`, earlier answers carry their reasoning back: in that
        field ("reasoning_content", "reasoning"), or inline as <think>…</think> ("think").
        `messages`: the conversation's messages in order, when the caller has them.
        """
        messages = self.messages.all() if messages is None else messages
        return [m.to_wire(reasoning_field) for m in messages if m.in_history]

    def ordered_messages(self) -> list[Message]:
        """Its messages in transcript order (position, choice, id)."""
        in_order = Message.objects.filter(conversation_id=self.id).order_by("position", "choice_index", "id")
        return list(in_order)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "title": self.title,
            "creator": self.creator.get_username() if self.creator else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "visibility": self.visibility,
            "comparison": self.comparison,
        }


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="messages")
    position = models.PositiveIntegerField()
    role = models.CharField(max_length=10, choices=Role.choices)
    # A string, or a list of content parts ({"type": "text"|"image_url"|"video_url", ...}).
    content = models.JSONField(default=str, blank=True)
    name = models.CharField(max_length=100, blank=True)
    tool_calls = models.JSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=100, blank=True)
    reasoning = models.TextField(blank=True)
    run = models.ForeignKey("Run", models.SET_NULL, null=True, blank=True, related_name="messages")
    choice_index = models.PositiveIntegerField(default=0)
    # Of a run's n choices, only the chosen one continues the conversation.
    in_history = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position", "choice_index", "id"]
        indexes = [models.Index(fields=["conversation", "position"])]

    def __str__(self) -> str:
        return f"{self.role} #{self.position}"

    def to_wire(self, reasoning_field: str | None = None) -> dict:
        wire: dict[str, Any] = {"role": self.role, "content": self.content}
        if reasoning_field and self.reasoning and self.role == self.Role.ASSISTANT:
            if reasoning_field == "think" and isinstance(self.content, str):
                wire["content"] = f"<think>{self.reasoning}</think>{self.content}"
            elif reasoning_field != "think":
                wire[reasoning_field] = self.reasoning
        if self.name:
            wire["name"] = self.name
        if self.tool_calls:
            wire["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            wire["tool_call_id"] = self.tool_call_id
        return wire

    def to_dict(self) -> dict:
        return {
            **self.to_wire(),
            "id": self.id,
            "position": self.position,
            "reasoning": self.reasoning,
            "run": self.run_id,
            "choice_index": self.choice_index,
            "in_history": self.in_history,
        }


class Run(models.Model):
    """One request to a relay; also the usage ledger."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        STREAMING = "streaming"
        COMPLETED = "completed"
        STOPPED = "stopped"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    ACTIVE = (Status.QUEUED, Status.STREAMING)

    # The ledger outlives what a run points at: each link is cleared on deletion, and the
    # names are kept as text, filled at submission.
    conversation = models.ForeignKey(Conversation, models.SET_NULL, null=True, related_name="runs")
    conversation_title = models.CharField(max_length=200, blank=True)
    workspace = models.ForeignKey(Workspace, models.SET_NULL, null=True, related_name="runs")
    workspace_name = models.CharField(max_length=100, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="runs")
    username = models.CharField(max_length=150, blank=True)
    provider = models.ForeignKey(Provider, models.SET_NULL, null=True, related_name="runs")
    provider_name = models.CharField(max_length=100)
    model = models.CharField(max_length=255)  # validation.MODEL_MAX
    # The body exactly as sent (it never holds the key) and the headers with the key masked.
    base_url = models.CharField(max_length=500, blank=True)
    # The text sent with its "messages" array cut out at `request_messages_at` (None: no
    # array was cut out), and the MessageText ids of that array's items in order.
    request_template = models.TextField(blank=True)
    request_messages_at = models.PositiveIntegerField(null=True, blank=True)
    request_texts = models.JSONField(default=list, blank=True)
    request_headers = models.JSONField(default=dict)
    response_headers = models.JSONField(default=dict, blank=True)
    # Set but not sent, and sent but known to be ignored or rejected (capability profile).
    param_notes = models.JSONField(default=dict, blank=True)
    # What came back on the wire: [milliseconds since the request, event data(, event type)].
    raw_frames = models.JSONField(default=list, blank=True)
    frames_dropped = models.PositiveIntegerField(default=0)
    # Invalid UTF-8 sequences in the relay's answer, each read as U+FFFD.
    decode_errors = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    submitted_at = models.DateTimeField(default=timezone.now)
    first_byte_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    # Reasoning has its own timing: its first token, and the first token of the answer proper.
    first_reasoning_at = models.DateTimeField(null=True, blank=True)
    first_content_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # One entry per choice: {"index", "content", "reasoning", "tool_calls", "finish_reason"}.
    output = models.JSONField(default=list, blank=True)
    finish_reasons = models.JSONField(default=list, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    # From the provider's prices when the run ended; null when no price was set.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    error_kind = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    last_seq = models.PositiveIntegerField(default=0)
    # The transcript position its answer takes: right after the message it answers.
    position = models.PositiveIntegerField(default=0)
    # Which process runs it, and when that process last said it was alive.
    owner = models.CharField(max_length=100, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Taken out of the transcript by hand; still counted in the usage ledger.
    hidden = models.BooleanField(default=False)
    # The verdicts on its JSON output (playground.schema_verdicts.output_checks), computed once as it
    # ends; null while it runs and when the request asked for no JSON output.
    checks = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["submitted_at", "id"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"]),
            models.Index(fields=["submitted_at"]),
            models.Index(fields=["user", "submitted_at"]),
        ]

    def __str__(self) -> str:
        return f"run {self.id} {self.model} {self.status}"

    def save(self, *args, **kwargs) -> None:
        self.store_request_texts()
        super().save(*args, **kwargs)

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    def millis_since_submit(self, moment) -> int | None:
        if moment is None:
            return None
        return round((moment - self.submitted_at).total_seconds() * 1000)

    def timing(self) -> dict:
        ttft = self.millis_since_submit(self.first_token_at)
        total = self.millis_since_submit(self.finished_at)
        tps = None
        if self.completion_tokens and self.first_token_at and self.finished_at:
            seconds = (self.finished_at - self.first_token_at).total_seconds()
            tps = round(self.completion_tokens / seconds, 1) if seconds > 0 else None
        reasoning_ms = None
        if self.first_reasoning_at:
            until = self.first_content_at or self.finished_at
            reasoning_ms = round((until - self.first_reasoning_at).total_seconds() * 1000) if until else None
        return {
            "ttfb_ms": self.millis_since_submit(self.first_byte_at),
            "ttft_ms": ttft,
            "reasoning_ms": reasoning_ms,
            "first_content_ms": self.millis_since_submit(self.first_content_at),
            "total_ms": total,
            "tokens_per_second": tps,
        }

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_tokens": self.cached_tokens,
            "estimated": self.usage_estimated,
        }

    def load_request(self) -> str:
        """Read the message texts of `request_text` now (one query), e.g. before async code
        reads the body; the text sent."""
        return self.request_text

    @property
    def request_text(self) -> str:
        """The request body's text exactly as sent ("" when none was). Rebuilt from the
        template and the message texts: one query the first time, none for a run built in
        this process."""
        text = getattr(self, "_request_text", None)
        if text is None:
            by_id = texts_by_id(self.request_texts)
            pieces = [by_id[i] for i in self.request_texts]
            at = self.request_messages_at
            text = self._request_text = rebuild_request(self.request_template, at, pieces)
        return text

    @request_text.setter
    def request_text(self, text: str) -> None:
        """Store `text` as sent; `store_request_texts()` (or `save()`) then stores its
        message texts and sets `request_texts`."""
        self._set_request(text, None)

    @property
    def request_body(self) -> dict:
        """The request body, its keys in the order they were sent."""
        body = getattr(self, "_request_body", None)
        if body is None:
            body = self._request_body = json.loads(self.request_text) if self.request_text else {}
        return body

    @request_body.setter
    def request_body(self, body: dict) -> None:
        self._set_request(wire_json(body), body)

    def _set_request(self, text: str, body: dict | None) -> None:
        self.request_template, self.request_messages_at, self._pending_texts = split_request(text, body)
        self._request_text, self._request_body = text, body

    def sent_body(self) -> dict:
        return self.request_body

    def request_params(self) -> dict:
        """The request body without its messages (an empty array in their place): no query."""
        if not self.request_template:
            return {}
        return json.loads(rebuild_request(self.request_template, self.request_messages_at, []))

    def store_request_texts(self) -> None:
        """Store the texts of the messages set by `request_text`/`request_body` (each once,
        shared with every run that sends it) and name them in `request_texts`."""
        pending, self._pending_texts = getattr(self, "_pending_texts", None), None
        if pending is not None:
            self.request_texts = MessageText.ids_for(pending)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "conversation": self.conversation_id,
            "user": self.user.get_username() if self.user else (self.username or None),
            "provider": self.provider_name,
            "model": self.model,
            "status": self.status,
            "position": self.position,
            "seq": self.last_seq,
            "choices": self.output,
            "finish_reasons": self.finish_reasons,
            "usage": self.usage(),
            "cost": {"usd": float(self.cost_usd), "estimated": self.usage_estimated}
            if self.cost_usd is not None
            else None,
            "timing": self.timing(),
            "error": {"kind": self.error_kind, "message": self.error_message} if self.error_kind else None,
            "checks": None if self.is_active else self.checks,
            "decode_errors": self.decode_errors,
            "submitted_at": self.submitted_at.isoformat(),
        }


class MessageText(models.Model):
    """The wire text of one message as a run sent it (its JSON), stored once for every run
    that sends it: a conversation's next turn sends its whole history again. Shared by
    content hash; runs (the ledger) outlive their conversation, so the texts do too."""

    sha256 = models.CharField(max_length=64, unique=True)
    text = models.TextField()

    def __str__(self) -> str:
        return f"message text {self.sha256[:12]}"

    @classmethod
    def ids_for(cls, texts: list[str]) -> list[int]:
        """The ids of `texts`, in order, storing those not yet stored: one SELECT, and one
        INSERT when some are new (a text another run stores meanwhile is not repeated)."""
        if not texts:
            return []
        digests = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        unique = dict(zip(digests, texts, strict=True))
        ids = dict(cls.objects.filter(sha256__in=list(unique)).values_list("sha256", "id"))
        new = [cls(sha256=d, text=t) for d, t in unique.items() if d not in ids]
        if new:
            # On a conflict the row is named again, so its id comes back.
            cls.objects.bulk_create(
                new, update_conflicts=True, unique_fields=["sha256"], update_fields=["text"]
            )
            ids.update((m.sha256, m.id) for m in new)
            if None in ids.values():  # a database that does not return them
                ids.update(cls.objects.filter(sha256__in=list(unique)).values_list("sha256", "id"))
        return [ids[d] for d in digests]


def texts_by_id(ids: list[int]) -> dict[int, str]:
    return dict(MessageText.objects.filter(id__in=set(ids)).values_list("id", "text")) if ids else {}


def split_request(text: str, body: dict | None = None) -> tuple[str, int | None, list[str]]:
    """(template, where the messages array goes, the wire text of each message) of a
    request's text (`body`: its parsed form, when the caller has it); the whole text as
    the template when its messages cannot be cut out so that `rebuild_request` gives
    back the same characters."""
    if body is None:
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return text, None, []
    marker = json.dumps(f"messages-{uuid.uuid4().hex}")
    framed = wire_json({**body, "messages": json.loads(marker)})
    at = framed.index(marker)
    template = framed[:at] + framed[at + len(marker) :]
    pieces = [wire_json(m) for m in messages]
    if rebuild_request(template, at, pieces) != text:
        return text, None, []
    return template, at, pieces


def rebuild_request(template: str, at: int | None, pieces: list[str]) -> str:
    """The request text from its template and its messages' wire texts in order."""
    if at is None:
        return template
    return template[:at] + "[" + ", ".join(pieces) + "]" + template[at:]


def new_demo_key() -> str:
    return "demo-" + secrets.token_urlsafe(16)


class Preset(models.Model):
    """A named model + parameters + system prompt, personal or shared with the workspace."""

    workspace = models.ForeignKey(Workspace, models.CASCADE, related_name="presets")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="presets")
    name = models.CharField(max_length=100)
    shared = models.BooleanField(default=False, help_text="Visible to everyone in the workspace.")
    provider = models.ForeignKey(Provider, models.SET_NULL, null=True, blank=True, related_name="+")
    model = models.CharField(max_length=255, blank=True)  # validation.MODEL_MAX
    system = models.TextField(blank=True)
    # Wire parameters, validated like a run's; unset ones are absent.
    params = models.JSONField(default=dict, blank=True)
    extra_body = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "owner", "name"], name="unique_preset_per_owner")
        ]

    def __str__(self) -> str:
        return self.name


def token_digest(token: str) -> str:
    """How a secret link token is stored: its SHA-256, so the table cannot be used to open links."""
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(models.Model):
    """An invite link: whoever opens it (signed up or logged in) joins `workspace` as `role`,
    while it is not revoked, not expired and has uses left; for one `email` when set. The
    token itself is shown once, to whoever created it; only its digest is stored."""

    workspace = models.ForeignKey(Workspace, models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    email = models.EmailField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invite to {self.workspace} as {self.role}"


class ShareLink(models.Model):
    """A read-only link to a conversation, while not revoked or expired. Only the token's
    digest is stored."""

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="share_links")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"share link to {self.conversation_id}"


class AppendOnlyQuerySet(models.QuerySet):
    """Refuses the ORM's bulk writes (`update`, `bulk_update`, `delete`) as the model
    refuses its own: the audit log only grows. (A deleted workspace or user still sets its
    link to NULL: Django's collector writes that without this queryset.)"""

    def update(self, **kwargs):
        raise ValueError("Audit events are append-only.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise ValueError("Audit events are append-only.")

    def delete(self):
        raise ValueError("Audit events are append-only.")

    def _raw_delete(self, using):
        raise ValueError("Audit events are append-only.")


class AuditEvent(models.Model):
    """One line of the append-only audit log (playground.audit.record writes it): who did
    what, when, from where. Names are copied so the line outlives what it names; saving
    an existing event or deleting one raises."""

    workspace = models.ForeignKey(Workspace, models.SET_NULL, null=True, blank=True, related_name="+")
    workspace_name = models.CharField(max_length=100, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40, db_index=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=40, blank=True)
    target_name = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="audit_by_workspace")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name} {self.action}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit events are append-only.")

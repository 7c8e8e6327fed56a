"""A workspace's providers: the providers page and its JSON API (list, add, edit, rotate the
key, set prices, enable, disable, delete, test the connection), probe what one honours,
choose whether rejected parameters are left out, list its models.

Every member sees the providers (name, base URL, models, whether enabled, the key's mask
`key_hint`); only owners and admins ("provider.manage") change them and see their extra
headers. No answer ever holds a key or its encrypted form; the key is write-only."""

from __future__ import annotations

import json
import math
import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from playground import audit, relay
from playground.access import POLICY, NoWorkspace, allows, current_workspace, membership_for, page
from playground.admin import ProviderForm
from playground.api import api, json_error
from playground.capabilities import probe
from playground.keys import KeyDecryptError
from playground.models import DEMO_MODELS, Provider, Workspace, validate_prices
from playground.upstream import (
    AuthError,
    ConnectError,
    ProtocolError,
    UpstreamError,
    UpstreamTimeout,
    list_models,
)
from playground.validation import Invalid, clean_model
from playground.views.runs import demo_base_url

SHOWN_MODELS = 5  # model names a connection test lists before "…"


@api(methods={"POST": "provider.use"}, json=True)
def probe_provider(request: HttpRequest, provider_id: int) -> JsonResponse:
    """Probe a provider with small requests, one per feature, and store what it honoured."""
    provider = get_object_or_404(Provider, id=provider_id, enabled=True)
    membership_for(request.user, provider.workspace_id, "provider.use")
    errors = {}
    model = clean_model(request.json().get("model"), errors)
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
    provider.capabilities = probe(target, model, previous=provider.capabilities)
    provider.save(update_fields=["capabilities"])
    return JsonResponse({"provider": provider.id, "capabilities": provider.capabilities})


@api(methods={"PATCH": "provider.manage"}, json=True)
def provider_profile(request: HttpRequest, provider_id: int) -> JsonResponse:
    """Workspace owners and admins choose whether rejected parameters are left out."""
    provider = get_object_or_404(Provider, id=provider_id)
    membership_for(request.user, provider.workspace_id, "provider.manage")
    data = request.json()
    if not isinstance(data.get("omit_rejected"), bool):
        reason = "must be true or false"
        return json_error(400, f"omit_rejected: {reason}", fields={"omit_rejected": reason})
    provider.capabilities = {**provider.capabilities, "omit_rejected": data["omit_rejected"]}
    provider.save(update_fields=["capabilities"])
    return JsonResponse({"provider": provider.id, "capabilities": provider.capabilities})


@api(methods={"GET": "workspace.read"})
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


# ---------------------------------------------------------------------------- managing providers

# What `PATCH` may change, besides the write-only "api_key".
EDITABLE = ("name", "base_url", "extra_headers", "enabled", "prices")
# An HTTP header name (RFC 9110 token).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ProviderInput(ProviderForm):
    """A provider's fields as the providers page and API take them: the admin's form (the
    key write-only, a moved base URL taking the key again), the model's validators
    (netguard's rules for the base URL, no Authorization header, validate_prices), plus the
    name unique in its workspace, header names and values a request can carry, and
    finite prices."""

    class Meta(ProviderForm.Meta):
        fields = ["name", "base_url", "api_key", "extra_headers", "enabled", "prices"]

    def __init__(self, *args, workspace: Workspace, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.fields["base_url"].required = not self.instance.is_demo

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        taken = Provider.objects.filter(workspace=self.workspace, name__iexact=name)
        if self.instance.pk:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise ValidationError(f"A provider named {name} is already in this workspace.")
        return name

    def clean_base_url(self) -> str:
        url = self.cleaned_data["base_url"].strip()
        if self.instance.is_demo and url:
            raise ValidationError("The built-in Demo relay has no base URL.")
        return url

    def clean_extra_headers(self) -> dict:
        headers = self.cleaned_data["extra_headers"] or {}
        if not isinstance(headers, dict):
            raise ValidationError("Extra headers must be an object of header name to string value.")
        seen = set()
        for name, value in headers.items():
            if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
                raise ValidationError(f"{name!r} is not a header name (letters, digits and -).")
            if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
                raise ValidationError(f"{name}: the value must be one line of text.")
            if name.lower() in seen:
                raise ValidationError(f"{name} is given twice.")
            seen.add(name.lower())
        return headers

    def clean_prices(self) -> dict:
        prices = self.cleaned_data["prices"] or {}
        validate_prices(prices)
        for model, price in prices.items():
            if not model.strip():
                raise ValidationError('A price needs a model name, or "*" for every model.')
            if not all(isinstance(v, int) or math.isfinite(v) for v in price.values()):
                raise ValidationError(f"{model}: prices must be finite numbers of dollars.")
        return prices

    def clean(self):
        cleaned = super().clean()
        if self.instance.is_demo and cleaned.get("api_key"):
            self.add_error("api_key", "The built-in Demo relay's key is its own; it cannot be set.")
        return cleaned


def provider_json(provider: Provider, manager: bool) -> dict:
    """A provider as the providers page shows it: never the key nor its encrypted form (the
    mask `key_hint` only); its extra headers only to those who manage it."""
    shown = {**provider.to_dict(), "base_url": provider.base_url, "prices": provider.prices}
    if manager:
        shown["extra_headers"] = provider.extra_headers
    return shown


def _bound(data: dict, provider: Provider, workspace: Workspace) -> ProviderInput:
    """The form bound to the request's fields (a PATCH's missing ones keep their values)."""
    unknown = sorted(set(data) - {*EDITABLE, "api_key"})
    if unknown:
        raise Invalid(dict.fromkeys(unknown, "is not a field of a provider"))
    current = {name: getattr(provider, name) for name in EDITABLE} if provider.pk else {}
    merged = {"enabled": True, "extra_headers": {}, "prices": {}, **current, **data}
    for name in ("name", "base_url", "api_key"):
        if merged.get(name) is not None and not isinstance(merged[name], str):
            raise Invalid({name: "must be text"})
    if not isinstance(merged.get("enabled"), bool):
        raise Invalid({"enabled": "must be true or false"})
    for name in ("extra_headers", "prices"):
        if not isinstance(merged.get(name), dict):
            raise Invalid({name: "must be an object"})
    # The form's JSON fields take JSON text; its checkbox, presence.
    form_data = {
        **{k: v for k, v in merged.items() if k not in ("extra_headers", "prices", "enabled")},
        "extra_headers": json.dumps(merged["extra_headers"]),
        "prices": json.dumps(merged["prices"]),
    }
    if merged["enabled"]:
        form_data["enabled"] = "on"
    return ProviderInput(form_data, instance=provider, workspace=workspace)


def _refusal(form: ProviderInput) -> Invalid:
    return Invalid({name: " ".join(errors) for name, errors in form.errors.items()})


def _save(provider: Provider) -> Provider:
    """Save the provider; a name another request took meanwhile is refused as `name`."""
    try:
        with transaction.atomic():
            provider.save()
    except IntegrityError:
        raise Invalid({"name": f"A provider named {provider.name} is already in this workspace."}) from None
    return provider


def _record(action: str, request: HttpRequest, provider: Provider, **details) -> None:
    audit.record(action, request=request, workspace=provider.workspace, target=provider, **details)


@api(methods={"GET": "workspace.read", "POST": "provider.manage"}, json=True)
def providers(request: HttpRequest) -> JsonResponse:
    """The current workspace's providers (GET), or a new one (POST: name, base_url,
    api_key, extra_headers, enabled, prices)."""
    workspace = current_workspace(request)
    if request.method == "GET":
        membership = membership_for(request.user, workspace.id)
        manager = allows(membership.role, "provider.manage")
        rows = workspace.providers.order_by("-is_demo", "name")
        return JsonResponse({"providers": [provider_json(p, manager) for p in rows], "manage": manager})
    membership_for(request.user, workspace.id, "provider.manage")
    form = _bound(request.json(), Provider(workspace=workspace), workspace)
    if not form.is_valid():
        raise _refusal(form)
    with transaction.atomic():
        provider = form.save(commit=False)
        provider.workspace, provider.created_by = workspace, request.user
        _save(provider)
        _record(
            "provider.created",
            request,
            provider,
            base_url=provider.base_url,
            key_hint=provider.key_hint,
            headers=sorted(provider.extra_headers),
            enabled=provider.enabled,
        )
        if provider.prices:
            _record("provider.prices_changed", request, provider, before={}, after=provider.prices)
    return JsonResponse({"provider": provider_json(provider, True)}, status=201)


@api(methods={"GET": "workspace.read", "PATCH": "provider.manage", "DELETE": "provider.manage"}, json=True)
def provider_detail(request: HttpRequest, provider_id: int) -> JsonResponse:
    """One provider: read it, change its fields (an empty or missing api_key keeps the key,
    a new one replaces it), or delete it (its runs stay in the ledger with its name)."""
    provider = get_object_or_404(Provider.objects.select_related("workspace"), id=provider_id)
    if request.method == "GET":
        membership = membership_for(request.user, provider.workspace_id)
        return JsonResponse({"provider": provider_json(provider, allows(membership.role, "provider.manage"))})
    membership_for(request.user, provider.workspace_id, "provider.manage")
    if request.method == "DELETE":
        with transaction.atomic():
            runs = provider.runs.count()
            _record("provider.deleted", request, provider, base_url=provider.base_url, runs_kept=runs)
            provider.delete()
        return JsonResponse({"deleted": provider_id, "runs_kept": runs})
    before = {name: getattr(provider, name) for name in EDITABLE}
    form = _bound(request.json(), provider, provider.workspace)
    if not form.is_valid():
        raise _refusal(form)
    with transaction.atomic():
        provider = _save(form.save(commit=False))
        changed = [
            name for name in ("name", "base_url", "extra_headers") if before[name] != getattr(provider, name)
        ]
        if changed:
            _record("provider.changed", request, provider, fields=changed)
        if form.cleaned_data.get("api_key"):
            _record("provider.key_changed", request, provider, key_hint=provider.key_hint)
        if before["prices"] != provider.prices:
            _record(
                "provider.prices_changed", request, provider, before=before["prices"], after=provider.prices
            )
        if before["enabled"] != provider.enabled:
            _record("provider.enabled" if provider.enabled else "provider.disabled", request, provider)
    return JsonResponse({"provider": provider_json(provider, True)})


def connection_words(error: UpstreamError) -> str:
    """A failed model listing in plain words (the error's message never holds the key)."""
    if isinstance(error, AuthError) and error.status == 401:
        return f"The relay refused the key (401). {error.message}"
    if isinstance(error, AuthError):
        return f"The relay refused access ({error.status}). {error.message}"
    if isinstance(error, ConnectError | UpstreamTimeout):
        return f"Could not connect: {error.message}"
    if isinstance(error, ProtocolError):
        return f"Connected, but the answer is not a model list: {error.message}"
    return f"The relay answered with an error: {error.message}"


@api(methods={"POST": "provider.manage"})
def test_provider(request: HttpRequest, provider_id: int) -> JsonResponse:
    """GET {base_url}/models with the provider's key, the answer in words: how many models
    (and the first few), or why not. Always a 200 with `ok`; the key is never in it."""
    provider = get_object_or_404(Provider, id=provider_id)
    membership_for(request.user, provider.workspace_id, "provider.manage")
    if provider.is_demo:
        models = list(DEMO_MODELS)
    else:
        try:
            models = list_models(provider.base_url, provider.get_api_key(), provider.extra_headers)
        except KeyDecryptError as exc:
            return JsonResponse({"ok": False, "message": str(exc), "models": []})
        except UpstreamError as exc:
            return JsonResponse(
                {"ok": False, "message": connection_words(exc), "models": [], "status": exc.status}
            )
    shown = ", ".join(models[:SHOWN_MODELS]) + (", …" if len(models) > SHOWN_MODELS else "")
    noun = "model" if len(models) == 1 else "models"
    message = f"Connected: {len(models)} {noun}" + (f" ({shown})" if models else "")
    return JsonResponse({"ok": True, "message": message, "models": models})


@page("workspace.read")
def providers_page(request: HttpRequest) -> HttpResponse:
    """The providers page: every member sees the workspace's providers (never a key);
    owners and admins add, edit, test, probe, enable, disable and delete them."""
    try:
        workspace = current_workspace(request)
    except NoWorkspace:
        return render(request, "playground/no_workspace.html")
    membership = membership_for(request.user, workspace.id)
    manager = allows(membership.role, "provider.manage")
    config = {
        "workspace": workspace.id,
        "manage": manager,
        "providers": [provider_json(p, manager) for p in workspace.providers.order_by("-is_demo", "name")],
        "refusal": POLICY["provider.manage"].refusal,
    }
    workspaces = Workspace.objects.filter(memberships__user=request.user).order_by("name")
    return render(
        request,
        "playground/providers.html",
        {"config": config, "workspace": workspace, "workspaces": workspaces, "manage": manager},
    )

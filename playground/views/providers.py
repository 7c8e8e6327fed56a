"""A workspace's providers: probe what one honours, choose whether rejected parameters are
left out, list its models."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404

from playground import relay
from playground.access import membership_for
from playground.api import api, json_error
from playground.capabilities import probe
from playground.keys import KeyDecryptError
from playground.models import Provider
from playground.upstream import UpstreamError, list_models
from playground.validation import clean_model
from playground.views.runs import demo_base_url


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

"""Presets: a named model + parameters + system prompt, personal or shared with the workspace.

Parameters are validated exactly as a run's are, so applying a preset never loads
what a submit would refuse. Anyone may keep personal presets (viewers too); sharing
needs a role that can run. Shared presets can be changed by their owner, and
deleted or unshared by the workspace's owners and admins as well.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone

from playground.access import Forbidden, allows, current_workspace, is_manager, membership_for
from playground.api import Refused, api, json_error
from playground.models import Membership, Preset
from playground.validation import Invalid, clean_extra, clean_model, clean_params, is_id

NAME_MAX = Preset._meta.get_field("name").max_length


def preset_dict(preset: Preset, user) -> dict:
    return {
        "id": preset.id,
        "name": preset.name,
        "shared": preset.shared,
        "owner": preset.owner.get_username(),
        "mine": preset.owner_id == user.id,
        "provider": preset.provider_id,
        "model": preset.model,
        "system": preset.system,
        "params": preset.params,
        "extra_body": preset.extra_body,
        "updated_at": preset.updated_at.isoformat(),
    }


def clean_preset(data: dict, workspace, membership: Membership, *, partial: bool = False) -> dict:
    """The fields to store, or Invalid naming each bad one."""
    errors, fields = {}, {}
    if "name" in data or not partial:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            errors["name"] = "give the preset a name"
        elif len(name.strip()) > NAME_MAX:
            errors["name"] = f"must be at most {NAME_MAX} characters"
        else:
            fields["name"] = name.strip()
    if "shared" in data or not partial:
        shared = data.get("shared", False)
        if not isinstance(shared, bool):
            errors["shared"] = "must be true or false"
        elif shared and not allows(membership.role, "preset.share"):
            errors["shared"] = "viewers keep personal presets only"
        else:
            fields["shared"] = shared
    if "provider" in data or not partial:
        provider = data.get("provider")
        if provider is None:
            fields["provider"] = None
        elif not (is_id(provider) and workspace.providers.filter(id=provider).exists()):
            errors["provider"] = "is not a provider of this workspace"
        else:
            fields["provider_id"] = provider
    if "model" in data or not partial:
        fields["model"] = clean_model(data.get("model", ""), errors, required=False)
    if "system" in data or not partial:
        if not isinstance(data.get("system", ""), str):
            errors["system"] = "must be text"
        else:
            fields["system"] = data.get("system", "")
    for key, clean in (("params", clean_params), ("extra_body", clean_extra)):
        if key in data or not partial:
            try:
                fields[key] = clean(data.get(key, {} if key == "params" else None)) or {}
            except Invalid as exc:
                errors.update(exc.errors)
    if errors:
        raise Invalid(errors)
    return fields


@api(methods={"GET": "workspace.read", "POST": "preset.save"}, json=True)
def presets(request: HttpRequest) -> JsonResponse:
    workspace = current_workspace(request)
    membership = membership_for(request.user, workspace.id)
    if request.method == "GET":
        visible = workspace.presets.filter(Q(owner=request.user) | Q(shared=True)).select_related("owner")
        return JsonResponse({"presets": [preset_dict(p, request.user) for p in visible]})
    data = request.json()
    fields = clean_preset(data, workspace, membership)
    existing = workspace.presets.filter(owner=request.user, name=fields["name"]).first()
    if existing and data.get("overwrite") is not True:
        return json_error(
            409, f"You already have a preset named “{fields['name']}”. Overwrite it?", exists=existing.id
        )
    if existing:
        for key, value in fields.items():
            setattr(existing, key, value)
        existing.updated_at = timezone.now()
        existing.save()
        return JsonResponse(preset_dict(existing, request.user))
    try:
        with transaction.atomic():
            preset = Preset.objects.create(workspace=workspace, owner=request.user, **fields)
    except IntegrityError:
        raise Refused(409, f"You already have a preset named “{fields['name']}”.") from None
    return JsonResponse(preset_dict(preset, request.user), status=201)


@api(methods={"PATCH": "preset.save", "DELETE": "preset.save"}, json=True)
def preset_detail(request: HttpRequest, preset_id: int) -> JsonResponse:
    preset = get_object_or_404(Preset.objects.select_related("owner"), id=preset_id)
    membership = membership_for(request.user, preset.workspace_id)
    mine = preset.owner_id == request.user.id
    if not mine and not preset.shared:
        raise Http404
    manager = is_manager(membership.role)
    if request.method == "DELETE":
        if not (mine or manager):
            raise Forbidden("Only its owner, or a workspace owner or admin, can delete a shared preset.")
        preset.delete()
        return JsonResponse({"deleted": preset_id})
    data = request.json()
    # Others' shared presets: managers may only unshare them.
    if not mine and not (manager and set(data) == {"shared"} and data["shared"] is False):
        raise Forbidden("Only its owner can change a preset.")
    fields = clean_preset(data, preset.workspace, membership, partial=True)
    for key, value in fields.items():
        setattr(preset, key, value)
    preset.updated_at = timezone.now()
    try:
        with transaction.atomic():
            preset.save()
    except IntegrityError:
        raise Refused(409, f"You already have a preset named “{fields['name']}”.") from None
    return JsonResponse(preset_dict(preset, request.user))

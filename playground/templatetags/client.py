"""Template tags for the pages' scripts.

`{% client_config %}` writes, with `json_script`, the paths the scripts call (id
`client-config`): `{"urls": {url name: path}, "reserved": [...]}`, each path built with
`reverse` from the URL names in `playground/urls.py`, with `{id}` where the route takes a
row id; `reserved` the keys an extra body may not set (the server's RESERVED).
`static/js/lib/urls.js` and `params.js` read it; no script writes a path of its own.

`param_kind` gives a parameter's kind from the parameter table the page context
carries (`config.parameters`), so a template names a parameter and not its kind.
"""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.html import json_script

from playground.validation import RESERVED

register = template.Library()

# The URL name of every route the scripts call -> the name of its id argument, or None.
ROUTES: dict[str, str | None] = {
    "index": None,
    "conversation": "conversation_id",
    "api-conversations": None,
    "api-import": None,
    "api-conversation": "conversation_id",
    "api-submit": "conversation_id",
    "api-add-message": "conversation_id",
    "api-fork": "conversation_id",
    "api-restore-conversation": "conversation_id",
    "api-message": "message_id",
    "api-move-message": "message_id",
    "api-choose": "message_id",
    "api-run": "run_id",
    "api-hide-run": "run_id",
    "api-stop": "run_id",
    "providers": None,
    "api-providers": None,
    "api-provider": "provider_id",
    "api-provider-test": "provider_id",
    "api-probe": "provider_id",
    "api-profile": "provider_id",
    "api-models": "provider_id",
    "api-presets": None,
    "api-preset": "preset_id",
    "api-import-conversation": None,
    "api-export-json": "conversation_id",
    "api-export-md": "conversation_id",
    "api-share-links": "conversation_id",
    "api-share-link": "share_link_id",
}
# Reversed in place of the id, then replaced by `{id}`: digits no route's path holds.
PLACEHOLDER = 918_273_645_546_372_819


def client_urls() -> dict[str, str]:
    """Each route of ROUTES as a path, `{id}` standing for its id."""
    urls = {}
    for name, argument in ROUTES.items():
        if argument is None:
            urls[name] = reverse(name)
        else:
            path = reverse(name, kwargs={argument: PLACEHOLDER})
            urls[name] = path.replace(str(PLACEHOLDER), "{id}")
    return urls


@register.simple_tag
def client_config() -> str:
    return json_script({"urls": client_urls(), "reserved": sorted(RESERVED)}, "client-config")


@register.filter
def param_kind(table: dict, name: str) -> str:
    """The kind of parameter `name` in the parameter table (`number`, `integer`, …), or ""."""
    return (table or {}).get(name, {}).get("kind", "")

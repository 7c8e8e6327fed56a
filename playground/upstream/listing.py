"""A relay's model list."""

from __future__ import annotations

import requests

from playground.keys import Secret
from playground.upstream.errors import ProtocolError, UpstreamTimeout, connect_error, status_error
from playground.upstream.http import build_headers, new_session


def list_models(base_url: str, api_key: Secret | str, extra_headers: dict | None = None) -> list[str]:
    """GET {base_url}/models; the model ids, sorted. Raises UpstreamError."""
    url = base_url.rstrip("/") + "/models"
    headers = build_headers(api_key, extra_headers, stream=False)
    headers.pop("Content-Type")
    with new_session() as session:
        try:
            response = session.get(url, headers=headers, timeout=(5, 10), allow_redirects=False)
        except requests.exceptions.Timeout:
            raise UpstreamTimeout("The relay did not list its models within 10 s.") from None
        except requests.exceptions.RequestException as exc:
            raise connect_error(exc, url) from None
        if response.status_code != 200:
            raise status_error(response.status_code, response.content, response.headers, api_key)
        try:
            data = response.json()
        except ValueError:
            raise ProtocolError("The relay's model list is not JSON.") from None
    items = data.get("data", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ProtocolError('The relay\'s model list is not a list (expected {"data": [...]}).')
    return sorted({str(item["id"]) for item in items if isinstance(item, dict) and "id" in item})

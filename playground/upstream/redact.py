"""Keeping the key out of what is shown or stored: headers, bodies, frames."""

from __future__ import annotations

import re

from playground.keys import Secret, mask


def masked_headers(headers: dict[str, str]) -> dict[str, str]:
    shown = dict(headers)
    if "Authorization" in shown:
        shown["Authorization"] = "Bearer " + mask(shown["Authorization"].removeprefix("Bearer "))
    return shown


# A bearer credential in text, up to a quote or backslash so that JSON text stays JSON.
BEARER = re.compile(r"(Bearer\s+)(?!\[api key\])[^\s\"'\\,;]+", re.IGNORECASE)


def scrub(text: str, secret: Secret | str) -> str:
    """Text a relay sent back (a body, a header, a frame) without the key or any bearer value."""
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if value and value in text:
        text = text.replace(value, "[api key]")
    if "earer" in text:
        text = BEARER.sub(r"\1[api key]", text)
    return text

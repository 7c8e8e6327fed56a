"""Encryption of provider API keys at rest (Fernet: AES-128-CBC + HMAC-SHA256).

The encryption keys live outside the database: `PLAYGROUND_ENCRYPTION_KEYS`
(comma-separated, newest first) or, unset, a key file in the data directory
that is created on first use with mode 0600.
"""

import os
import weakref
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class KeyDecryptError(Exception):
    pass


def load_keys() -> list[str]:
    if settings.ENCRYPTION_KEYS:
        return list(settings.ENCRYPTION_KEYS)
    path = settings.ENCRYPTION_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key_file([Fernet.generate_key().decode()])
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_key_file(keys: list[str]) -> None:
    path = settings.ENCRYPTION_KEY_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(keys) + "\n")
    os.replace(tmp, path)
    multifernet.cache_clear()


@cache
def multifernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in load_keys()])


def encrypt(plaintext: str) -> str:
    return multifernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return multifernet().decrypt(token.encode()).decode()
    except InvalidToken:
        # Never include the token or any key material in the message.
        raise KeyDecryptError(
            "This provider's API key cannot be decrypted with the configured "
            "encryption keys; re-enter the key or restore the old encryption key."
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a token under the newest key; any configured key may decrypt it."""
    return multifernet().rotate(token.encode()).decode()


def mask(api_key: str) -> str:
    """What a page may show of a key: its prefix family and last four characters."""
    if not api_key:
        return ""
    prefix = api_key[:3] if api_key[:3] in ("sk-", "pk-") else ""
    return f"{prefix}…{api_key[-4:]}" if len(api_key) > 8 else "…"


class Secret:
    """A decrypted key that shows only its mask: in a repr, a str, a debug page's locals.

    `reveal()` gives the plain text; call it where the text leaves the process (the
    Authorization header), so that the frames between hold this object instead.
    Every live Secret is listed in `Secret.live`, which lets the exception reporter
    (playground.debug) blank a revealed copy wherever it turns up.
    """

    __slots__ = ("_value", "__weakref__")
    live: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, value: str) -> None:
        self._value = value
        if value:
            Secret.live.add(self)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"

    __str__ = __repr__

    def __copy__(self) -> "Secret":
        return self

    def __deepcopy__(self, memo: dict) -> "Secret":
        return self

    def __reduce__(self):
        raise TypeError("a Secret is not pickled")

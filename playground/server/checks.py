"""What every patch's `install()` uses to check the third-party internals it relies on.

A check returns a list of what is missing or changed, each item a short phrase naming
the package's object ("twisted.internet.tcp.Connection._aborting"); an empty list means
the patch may be installed. `refuse()` logs the one warning a patch gives when it is not.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from importlib import metadata

log = logging.getLogger("playground.server")


def qualname(obj) -> str:
    if inspect.ismodule(obj):
        return obj.__name__
    if not (inspect.isclass(obj) or callable(obj)):
        obj = type(obj)  # an instance: name its class
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def attributes(obj, names: Iterable[str]) -> list[str]:
    """The names `obj` (a class, module or instance) lacks."""
    return [f"{qualname(obj)}.{name}" for name in names if not hasattr(obj, name)]


def parameters(func: Callable, names: Iterable[str]) -> list[str]:
    """The parameters `func` does not take (by name)."""
    try:
        taken = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return [f"the signature of {qualname(func)}"]
    return [f"parameter {name!r} of {qualname(func)}" for name in names if name not in taken]


def names_used(func: Callable, expected: Iterable[str]) -> list[str]:
    """Whether `func`'s code refers to exactly the global and attribute names `expected`.

    For a function a patch replaces or copies: a new name in it (or one gone) means the
    package changed what it does there, and the patch would lose that change.
    """
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return [f"the code of {qualname(func)}"]
    used, wanted = set(code.co_names), set(expected)
    if used == wanted:
        return []
    changes = [f"+{name}" for name in sorted(used - wanted)] + [f"-{name}" for name in sorted(wanted - used)]
    return [f"{qualname(func)} changed ({', '.join(changes)})"]


def sets(func: Callable, names: Iterable[str]) -> list[str]:
    """The attribute names `func` (an `__init__`, say) no longer refers to."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    used = set(code.co_names) if code is not None else set()
    return [f"{name} in {qualname(func)}" for name in names if name not in used]


def version(distribution: str, low: tuple[int, ...], below: tuple[int, ...]) -> list[str]:
    """Whether the installed `distribution` is at least `low` and below `below`."""
    try:
        text = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return [f"{distribution} (not installed)"]
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    if not (low <= tuple(parts) < below):
        shown = ".".join(map(str, low)), ".".join(map(str, below))
        return [f"{distribution} {text} (tested: >={shown[0]}, <{shown[1]})"]
    return []


def refuse(name: str, missing: list[str]) -> bool:
    """Log the patch's one warning and report it not installed."""
    log.warning("%s not installed, stock behaviour kept; missing or changed: %s", name, "; ".join(missing))
    return False

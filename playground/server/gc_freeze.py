"""Fast path `gc_freeze`: the code loaded at start-up moved out of the cyclic collector's sight.

Installed last, once the ASGI application's modules are imported: one full collection,
then `gc.freeze()`; the frozen objects live as long as the process.
"""

import gc

from playground.server import checks

NAME = "fast path gc_freeze"


def install() -> bool:
    if not hasattr(gc, "freeze"):
        return checks.refuse(NAME, ["gc.freeze"])
    gc.collect()
    gc.freeze()
    return True

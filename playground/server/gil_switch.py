"""Fast path `gil_switch`: the server process's GIL switch interval, settings.GIL_SWITCH_MS.

How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
0 keeps Python's default (nothing is installed).
"""

import sys

from django.conf import settings

from playground.server import checks

NAME = "fast path gil_switch"


def install() -> bool:
    """Set the switch interval; False when GIL_SWITCH_MS is 0 (Python's default kept)."""
    if not hasattr(sys, "setswitchinterval"):
        return checks.refuse(NAME, ["sys.setswitchinterval"])
    if settings.GIL_SWITCH_MS <= 0:
        return False
    sys.setswitchinterval(settings.GIL_SWITCH_MS / 1000)
    return True

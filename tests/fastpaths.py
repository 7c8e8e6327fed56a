"""Which fast paths this test pass runs with (PLAYGROUND_FAST_PATHS; the Makefile runs the
suite with `all` and with `none`)."""

import pytest
from django.conf import settings


def needs(*names: str) -> pytest.MarkDecorator:
    """Skip unless each named fast path is on: the test compares or counts what it changes."""
    off = [name for name in names if name not in settings.FAST_PATHS]
    return pytest.mark.skipif(bool(off), reason=f"fast path {', '.join(off)} off (PLAYGROUND_FAST_PATHS)")

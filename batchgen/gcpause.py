"""Pause the cyclic garbage collector around bulk construction.

Loading a 100,000-task manifest or replaying a 400,000-line journal builds hundreds of
thousands of small dicts that all stay alive; the collector runs again and again over
them and finds nothing. Pausing it made both two to three times faster.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

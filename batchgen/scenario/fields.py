"""Reading an answer's fields defensively: each gives a typed value or None, never raises.

A server may send anything: a string where a number belongs, a list of thousands, a
nested mapping. What batchgen keeps is bounded here, once.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from ..core.task import is_safe_id

MAX_TEXT = 500  # characters kept of any text a server sends (reasons, errors)
MAX_ASSETS = 16  # asset ids kept of one job (MusicGen makes one; a list of thousands is not a job's)
MAX_DETAILS = 40  # entries kept of a cost breakdown


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def credits(value: Any) -> float | None:
    """An amount of creative units: a finite number of at least 0 (anything else is unknown)."""
    amount = number(value)
    return amount if amount is not None and amount >= 0 else None


def asset_ids(value: Any) -> tuple[str, ...]:
    """A job's asset ids: the usable ones, each once, a handful at most."""
    safe = dict.fromkeys(a for a in items(value) if is_safe_id(a))
    return tuple(itertools.islice(safe, MAX_ASSETS))


def numbers(value: Any) -> dict[str, float]:
    """A cost breakdown: the numeric entries of a mapping, a few dozen at most (the rest is dropped)."""
    found = ((str(k)[:60], credits(v)) for k, v in mapping(value).items())
    return dict(itertools.islice(((k, n) for k, n in found if n is not None), MAX_DETAILS))

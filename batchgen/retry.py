"""Backoff policy as a pure function of (attempt, server hint, random draw).

Full jitter (AWS's "exponential backoff and jitter"): spreading retries uniformly over
the window avoids every worker hammering the API in step after a shared outage. A
server's own hint (Retry-After and friends) is a floor, never shortened.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retry number `attempt` (1-based) of one operation."""

    base: float = 0.5
    cap: float = 60.0
    attempts: int = 8  # tries of one operation before a transient error is given up on

    def delay(self, attempt: int, hint: float | None = None, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        jittered = float(rand()) * ceiling
        if hint is None:
            return jittered
        # Honour the hint, plus a little jitter so waiters released together don't collide.
        return hint + min(jittered, 0.1 * hint + 0.05)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.attempts

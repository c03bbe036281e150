"""How fast and how many: the submission throttle, a shared cooldown, the in-flight cap.

Rate (`--rate`) and concurrency (`--max-in-flight`) are separate settings with separate
mechanisms; a 429 from anywhere pauses every submitter through the one `Cooldown`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from asyncio_throttle.throttler import Throttler

# asyncio-throttle stamps a slot when it is granted, the server when the request
# arrives; a little slack keeps request jitter from putting N+1 in a server's window.
WINDOW_SLACK = 1.02


class RateLimit:
    """At most `rate` requests in any window of one second (asyncio-throttle underneath).

    Fractional rates become one slot per 1/rate seconds.
    """

    def __init__(self, rate: float) -> None:
        slots = max(1, math.floor(rate))
        self._throttler = Throttler(rate_limit=slots, period=slots / rate * WINDOW_SLACK)

    async def acquire(self) -> None:
        await self._throttler.acquire()  # type: ignore[no-untyped-call]


def make_throttle(rate: float) -> RateLimit:
    return RateLimit(rate)


class Cooldown:
    """A pause shared by every submitter: one 429 stops them all until it passes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0
        self.trips = 0

    def trip(self, seconds: float) -> None:
        self.trips += 1
        self._until = max(self._until, self._clock() + seconds)

    @property
    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())

    async def wait(self) -> None:
        # A loop, not an Event: another 429 may push the end further while we sleep.
        while (left := self.remaining) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)


class InFlight:
    """The cap on jobs submitted and not yet finished; it can be lowered mid-run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.limit)
            self._take()

    def take_now(self) -> None:
        """Count a job that is already running (found in the journal on resume)."""
        self._take()

    def _take(self) -> None:
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    async def release(self) -> None:
        async with self._changed:
            self.in_use = max(0, self.in_use - 1)
            self._changed.notify_all()

    def lower(self, limit: int) -> bool:
        """Lower the cap (the API told us the team's ceiling); True when it changed."""
        limit = max(1, limit)
        if limit >= self.limit:
            return False
        self.limit = limit
        return True

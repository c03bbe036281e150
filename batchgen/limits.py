"""How fast and how many: one admission gate for rate-counted requests, and the in-flight cap.

Rate (`--rate`) and concurrency (`--max-in-flight`) are separate settings with separate
mechanisms (as aiometer separates them). Every paid or rate-counted request (a submit,
a dry run) passes the gate: the shared cooldown, then a rate slot, then the cooldown
again, since a 429 may have arrived while it waited for the slot. A 429 from any
request pauses every submitter through the one `Cooldown`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from asyncio_throttle.throttler import Throttler

from .errors import ApiError
from .retry import MAX_WAIT, Backoff

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


class Cooldown:
    """A pause shared by every submitter: one 429 stops them all until it passes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_wait: float = MAX_WAIT) -> None:
        self._clock = clock
        self._max_wait = max_wait
        self._until = 0.0
        self.trips = 0

    def trip(self, seconds: float) -> None:
        self.trips += 1
        self._until = max(self._until, self._clock() + min(max(0.0, seconds), self._max_wait))

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
            self.take_now()

    def take_now(self) -> None:
        """Count a job that is already running (found in the journal on resume)."""
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


@dataclass(frozen=True, slots=True)
class Pause:
    """What one 429 changed: how long submitters pause, and a lowered in-flight cap."""

    seconds: float
    lowered_to: int | None = None


class Admission:
    """The gate (`async with admission:`) and the in-flight cap (`admission.jobs`)."""

    def __init__(self, rate: float, max_in_flight: int, backoff: Backoff, clock: Callable[[], float] = time.monotonic):
        self.cooldown = Cooldown(clock, backoff.max_wait)
        self.jobs = InFlight(max_in_flight)
        self._rate = RateLimit(rate)
        self._backoff = backoff

    async def __aenter__(self) -> None:
        while True:
            await self.cooldown.wait()
            await self._rate.acquire()
            if self.cooldown.remaining <= 0:
                return

    async def admit(self, abort: asyncio.Event) -> bool:
        """Pass the gate, or give up as soon as `abort` is set (a stop); True when admitted."""
        if abort.is_set():
            return False
        entering = asyncio.ensure_future(self.__aenter__())
        aborting = asyncio.ensure_future(abort.wait())
        try:
            await asyncio.wait((entering, aborting), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (entering, aborting):
                waiter.cancel()
        return entering.done() and not entering.cancelled() and not abort.is_set()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def saw(self, err: BaseException) -> Pause | None:
        """Any 429, from any request: every submitter pauses until the server's hint."""
        if not isinstance(err, ApiError) or err.status != 429:
            return None
        lowered = err.action_limit if err.action_limit is not None and self.jobs.lower(err.action_limit) else None
        wait = err.retry_after if err.retry_after is not None else self._backoff.delay(self.cooldown.trips + 1)
        self.cooldown.trip(wait)
        return Pause(min(wait, self._backoff.max_wait), lowered)

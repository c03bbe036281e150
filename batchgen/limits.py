"""How fast and how many: one admission gate for rate-counted requests, and the in-flight cap.

Rate (`--rate`) and concurrency (`--max-in-flight`) are separate settings with separate
mechanisms (as aiometer separates them). Every paid or rate-counted request (a submit,
a dry run) passes the gate: the shared cooldown, then a rate slot, then the cooldown
again, since a 429 may have arrived while it waited for the slot. A 429 from any
request pauses every submitter through the one `Cooldown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from asyncio_throttle.throttler import Throttler

from .errors import ApiError
from .retry import MAX_WAIT, Backoff

# asyncio-throttle stamps a slot when it is granted, the server when the request
# arrives; a little slack keeps request jitter from putting N+1 in a server's window.
WINDOW_SLACK = 1.02


async def pause(seconds: float, abort: asyncio.Event | None = None) -> None:
    """Sleep `seconds`, or less if `abort` is set meanwhile (no polling: one timer, one wait)."""
    if abort is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await abort.wait()


class RateLimit(Throttler):
    """At most `rate` requests in any window of one second, on asyncio-throttle's window.

    Fractional rates become one slot per 1/rate seconds. asyncio-throttle's own
    `acquire` looks again every 10 ms; this one sleeps until the slots it needs free,
    and can be given up at once (`abort`), so waiting submitters cost nothing while
    they wait and leave as soon as the run stops.

    Submitters that ask in the same moment (a wave of finished jobs frees their slots
    together) are decided together: when they do not all fit in the window now but
    would within `GROUP` of the window, they all wait and go out at once. Letting the one
    or two that fit go first splits the wave in two, and every wave costs the run a
    listing, an asset lookup, two fsync rounds and their wake-ups of its own.
    """

    GROUP = 0.5  # share of the window a submission may wait to go out with the rest of its wave

    def __init__(self, rate: float) -> None:
        slots = max(1, math.floor(rate))
        super().__init__(rate_limit=slots, period=slots / rate * WINDOW_SLACK)
        self._asking = 0  # submitters inside `acquire`

    def try_take(self) -> bool:
        """Take a slot if one is free now."""
        self.flush()  # type: ignore[no-untyped-call]
        if len(self._task_logs) >= self.rate_limit:
            return False
        self._task_logs.append(time.monotonic())
        return True

    def wait(self, wanted: int) -> float:
        """Seconds until a slot should be taken, with `wanted` submitters asking; 0 for now."""
        self.flush()  # type: ignore[no-untyped-call]
        stamps: deque[float] = self._task_logs
        period: float = self.period
        free = self.rate_limit - len(stamps)
        if wanted <= free:
            return 0.0
        now = time.monotonic()
        if wanted <= self.rate_limit:  # all of them fit once enough of the oldest slots free
            together = stamps[wanted - free - 1] + period - now
            if together <= self.GROUP * period:
                return max(0.0, together)
        return 0.0 if free > 0 else max(0.0, stamps[0] + period - now)

    async def acquire(self, abort: asyncio.Event | None = None) -> bool:
        """Wait for a slot and take it; False (nothing taken) if `abort` is set first."""
        self._asking += 1
        try:
            await asyncio.sleep(0)  # the rest of this moment's submitters ask too: decided together
            while True:
                if abort is not None and abort.is_set():
                    return False
                wait = self.wait(self._asking)
                if wait <= 0 and self.try_take():
                    return True
                await pause(max(0.001, wait), abort)
        finally:
            self._asking -= 1


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

    async def wait(self, abort: asyncio.Event | None = None) -> None:
        # A loop, not an Event: another 429 may push the end further while we sleep.
        while (left := self.remaining) > 0 and not (abort is not None and abort.is_set()):
            await pause(left, abort)


class InFlight:
    """The cap on jobs submitted and not yet finished; it can be lowered mid-run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            while self.in_use >= self.limit:  # a plain Condition wait, no timeout to race a cancellation
                await self._changed.wait()
            self.take_now()

    def take_now(self) -> None:
        """Count a job that is already running (found in the journal on resume)."""
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    async def release(self) -> None:
        async with self._changed:
            self.in_use = max(0, self.in_use - 1)
            self._changed.notify(1)  # one slot freed, one waiter: waking them all costs a wake-up each

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
        await self.admit()

    async def admit(self, abort: asyncio.Event | None = None) -> bool:
        """Pass the gate, or give up as soon as `abort` is set (a stop); True when admitted."""
        while True:
            if abort is not None and abort.is_set():
                return False
            if self.cooldown.remaining > 0:
                await self.cooldown.wait(abort)
                continue
            if not await self._rate.acquire(abort):
                return False
            if self.cooldown.remaining <= 0:  # a 429 may have come in while we waited for the slot
                return True

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

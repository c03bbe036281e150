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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from asyncio_throttle.throttler import Throttler

from ..core.errors import ApiError
from ..core.retry import MAX_WAIT, Backoff

# A safety margin on our own window: the network delays each request by a few
# milliseconds, differently each time, so two requests that leave exactly one window apart
# may arrive a little less than that apart. 2% of a one-second window is 20 ms.
WINDOW_SLACK = 1.02


async def pause(seconds: float, abort: asyncio.Event | None = None) -> None:
    """Sleep `seconds`, or less if `abort` is set meanwhile (no polling: one timer, one wait)."""
    if abort is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await abort.wait()


class Slot:
    """One rate-counted request's place in the window, counted from when the request left.

    `departed()` is called as its bytes go to the socket (the client's trace hook); leaving
    the `with` block calls it too, so a request that failed before it left, or one never
    sent, still counts from the latest moment it could have left. Idempotent.
    """

    __slots__ = ("_done", "_rate")

    def __init__(self, rate: RateLimit) -> None:
        self._rate = rate
        self._done = False

    def departed(self) -> None:
        if not self._done:
            self._done = True
            self._rate._left()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.departed()


class RateLimit:
    """At most `rate` requests in any window of one second, as a strict server counts them.

    asyncio-throttle's `Throttler` (through its public `async with`) spaces the grants. It
    stamps a slot when it grants it, but a server counts a request when it arrives, and
    between the two lie the caller's own work and the connection pool: a wave of
    submitters granted together leaves spread over tens of milliseconds, and the next
    wave, granted exactly one window later, lands inside the same server window. So this
    wrapper also holds every slot until its request has left (`Slot.departed`) and counts
    the window from then, with `WINDOW_SLACK` for the network's jitter. Our own condition
    is the stricter of the two, so the throttler never has to poll.

    Fractional rates become one slot per 1/rate seconds. Waiting submitters queue on a
    lock (FIFO) and only the first sleeps, until exactly when a slot frees; a stop
    (`abort`) releases them all at once.
    """

    def __init__(self, rate: float, window: float = 1.0) -> None:
        self.slots = max(1, math.floor(rate))
        self.period = window * self.slots / rate * WINDOW_SLACK
        self._throttler = Throttler(rate_limit=self.slots, period=self.period, retry_interval=0.002)
        self._departures: deque[float] = deque(maxlen=self.slots)  # when the latest requests left
        self._out = 0  # slots granted whose request has not left yet
        self._turn = asyncio.Lock()

    def wait(self) -> float | None:
        """Seconds until the next slot may be granted: 0 for now, None until a request leaves."""
        free = self.slots - self._out  # departures the window may hold, plus this one
        if free <= 0:
            return None
        departures = self._departures
        if len(departures) < free:
            return 0.0
        # The free-th latest departure must have left the window for one more to fit.
        return max(0.0, departures[-free] + self.period - time.monotonic())

    async def acquire(self, abort: asyncio.Event | None = None) -> Slot | None:
        """Wait for a slot and take it; None (nothing taken) if `abort` is set first."""
        async with self._turn:
            while True:
                if abort is not None and abort.is_set():
                    return None
                wait = self.wait()
                if wait == 0.0:
                    break
                # None: every slot is on its way out; a request leaves within milliseconds.
                await pause(0.002 if wait is None else wait, abort)
            async with self._throttler:
                self._out += 1
            return Slot(self)

    def _left(self) -> None:
        self._out -= 1
        self._departures.append(time.monotonic())


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
    """The gate (`admit`, or `async with admission.slot()`) and the in-flight cap (`admission.jobs`)."""

    def __init__(self, rate: float, max_in_flight: int, backoff: Backoff, clock: Callable[[], float] = time.monotonic):
        self.cooldown = Cooldown(clock, backoff.max_wait)
        self.jobs = InFlight(max_in_flight)
        self._rate = RateLimit(rate)
        self._backoff = backoff

    async def admit(self, abort: asyncio.Event | None = None) -> Slot | None:
        """Pass the gate, or give up as soon as `abort` is set (a stop); the slot when admitted.

        Use the slot as `with slot:` around the request, handing `slot.departed` to the
        client, so the window counts the request from when it left."""
        while True:
            if abort is not None and abort.is_set():
                return None
            if self.cooldown.remaining > 0:
                await self.cooldown.wait(abort)
                continue
            slot = await self._rate.acquire(abort)
            if slot is None:
                return None
            if self.cooldown.remaining <= 0:  # a 429 may have come in while we waited for the slot
                return slot
            slot.departed()  # not used: it counts as if sent now, which can only be early

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """`async with admission.slot() as slot:` for a request that waits as long as it takes."""
        slot = await self.admit()
        assert slot is not None  # with no abort, admit waits until it is admitted
        with slot:
            yield slot

    def saw(self, err: BaseException) -> Pause | None:
        """Any 429, from any request: every submitter pauses until the server's hint."""
        if not isinstance(err, ApiError) or err.status != 429:
            return None
        lowered = err.action_limit if err.action_limit is not None and self.jobs.lower(err.action_limit) else None
        wait = err.retry_after if err.retry_after is not None else self._backoff.delay(self.cooldown.trips + 1)
        self.cooldown.trip(wait)
        return Pause(min(wait, self._backoff.max_wait), lowered)


def earliest_finish(
    n: int, rate: float, max_in_flight: int, job_time: float, *, before: int = 0, window: float = 1.0
) -> float:
    """The lower bound on a run's makespan: when the last of `n` jobs could end at best.

    Each job starts as soon as both limits allow it: no more than `rate` starts in any
    window, no more than `max_in_flight` jobs running, each for `job_time` (start_i =
    max(start_i-1, start_i-R + window, start_i-M + J); the bound is start_n + J). `before`
    counts rate-counted requests sent first that hold no job (the dry runs that price a
    batch). Bench and tests hold a run's makespan against it.
    """
    slots = max(1, math.floor(rate))
    period = window * slots / rate
    sent: list[float] = []  # every rate-counted request, dry runs first
    starts: list[float] = []  # the jobs among them
    for i in range(before + n):
        at = sent[-1] if sent else 0.0
        if i >= slots:
            at = max(at, sent[i - slots] + period)
        if i >= before and len(starts) >= max_in_flight:
            at = max(at, starts[-max_in_flight] + job_time)
        sent.append(at)
        if i >= before:
            starts.append(at)
    return (starts[-1] + job_time) if starts else 0.0

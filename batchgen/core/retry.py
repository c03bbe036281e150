"""Retries: the backoff policy as a pure function, and the one helper every retry uses.

Full jitter (AWS's "exponential backoff and jitter") spreads retries uniformly over the
window, so workers released together after a shared outage do not hammer the API in
step. A server's own hint (Retry-After and friends) is a floor, never shortened, but
capped: no server may park a run for ever.

The helper has the shape of stamina's `retry_context`::

    async for attempt in Retrying(policy, on=transient):
        with attempt:
            return await client.get_job(job_id)

An error `on` accepts is swallowed by the `with` block and the next attempt comes after
the backoff; anything else, or the last allowed attempt's error, propagates.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from .errors import ApiError, ErrorKind, HeldOff

T = TypeVar("T")
MAX_WAIT = 900.0  # the longest pause a server's hint may impose (15 minutes)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retry number `attempt` (1-based) of one operation."""

    base: float = 0.5
    cap: float = 60.0
    attempts: int = 8  # tries of one operation before a transient error is given up on
    limited: int = 200  # 429s (or other "come back later" answers) in a row before giving up
    max_wait: float = MAX_WAIT  # ceiling on any server-given wait

    @property
    def patience(self) -> float:
        """Seconds one operation may spend in all waiting on "come back later" (4 h by default)."""
        return 16 * self.max_wait

    def delay(self, attempt: int, hint: float | None = None, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        jittered = float(rand()) * ceiling
        if hint is None:
            return jittered
        hint = min(max(0.0, hint), self.max_wait)
        # Honour the hint, plus a little jitter so waiters released together don't collide.
        return hint + min(jittered, 0.1 * hint + 0.05)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.attempts


def transient(exc: BaseException) -> bool:
    """An API error worth trying again (429, 5xx, connection trouble)."""
    return isinstance(exc, ApiError) and exc.kind is ErrorKind.TRANSIENT


def rate_limited(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 429


def server_hint(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, ApiError) else None


class Attempt:
    """One try; as a context manager it swallows an error the retrier will retry."""

    __slots__ = ("_retrying", "number")

    def __init__(self, retrying: Retrying, number: int) -> None:
        self._retrying = retrying
        self.number = number

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        return self._retrying._settle(exc)


class Retrying:
    """Attempts at one operation until it succeeds, fails for good, or runs out of tries.

    `on` decides which errors are retried; `patient` marks the ones that mean "come
    back later" (a 429, an expired URL): they count against `policy.limited`, not
    `policy.attempts`. `observe` sees every error that will be retried (a 429 pauses
    every submitter through it). `hint` reads the server's own wait from an error.
    With `hold_off`, an error whose hint (a 429's or a 503's Retry-After) is longer than
    `policy.max_wait` raises `HeldOff` at once instead of waiting the capped time again and again: for
    requests a run can leave to the next one (submits, dry runs).
    """

    def __init__(
        self,
        policy: Backoff,
        *,
        on: Callable[[BaseException], bool] = transient,
        patient: Callable[[BaseException], bool] = rate_limited,
        hint: Callable[[BaseException], float | None] = server_hint,
        observe: Callable[[BaseException], object] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        hold_off: bool = False,
    ) -> None:
        self.policy = policy
        self._hold_off = hold_off
        self._on, self._patient, self._hint, self._observe, self._sleep = on, patient, hint, observe, sleep
        self.failures = 0  # errors counted against policy.attempts
        self.waits = 0  # "come back later" answers in a row
        self.waited = 0.0  # seconds spent waiting on them
        self._number = 0
        self._finished = False
        self._delay: float | None = None

    def __aiter__(self) -> Retrying:
        return self

    async def __anext__(self) -> Attempt:
        if self._finished:
            raise StopAsyncIteration
        if self._delay is not None:
            delay, self._delay = self._delay, None
            if delay > 0:
                await self._sleep(delay)
        self._number += 1
        self._finished = True  # until the attempt fails in a way that is retried
        return Attempt(self, self._number)

    def _settle(self, exc: BaseException | None) -> bool:
        if exc is None or not isinstance(exc, Exception) or not self._on(exc):
            return False
        hint = self._hint(exc)
        if self._hold_off and hint is not None and hint > self.policy.max_wait:
            raise HeldOff(hint, self.policy.max_wait) from None  # a 429's or a 503's: not in this run
        if self._patient(exc):
            self.waits += 1
            delay = self.policy.delay(self.waits, hint)
            self.waited += delay
            if self.waits >= self.policy.limited or self.waited > self.policy.patience:
                return False
        else:
            self.waits = 0
            self.failures += 1
            if self.policy.exhausted(self.failures):
                return False
            delay = self.policy.delay(self.failures, hint)
        if self._observe is not None:
            self._observe(exc)
        self._delay = delay
        self._finished = False
        return True


async def retry_call(
    policy: Backoff,
    call: Callable[[], Awaitable[T]],
    *,
    on: Callable[[BaseException], bool] = transient,
    observe: Callable[[BaseException], object] | None = None,
    hold_off: bool = False,
) -> T:
    """`await call()` under `Retrying`: the common case in one line."""
    async for attempt in Retrying(policy, on=on, observe=observe, hold_off=hold_off):
        with attempt:
            return await call()
    raise AssertionError("unreachable: Retrying ends by returning or raising")

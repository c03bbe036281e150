"""The watcher: one coroutine that asks about every running job when it is due.

It decides *when* with the pure policy of `polling` and *how* by cost: one unfiltered
`GET /jobs` listing settles every due job at once when that takes fewer requests than
a `GET /jobs/{id}` each. It tells the runner how each job ended through `on_end`, as a
typed outcome, and about errors through `on_error` (a 429 pauses submissions too).

Between rounds it sleeps until the next job is due (a job added or submitted wakes it
at once) inside `asyncio.timeout()`: Python 3.11's `wait_for` can swallow a
cancellation that arrives as the awaited event fires, and a loop around it then never
ends.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..core.errors import ApiError, CredentialsError
from ..core.polling import LIST_STEP, MIN_STEP, PAGE, DurationEstimate, epoch, next_poll, poll_delay, prefer_list
from ..core.retry import Backoff
from ..core.task import Task
from ..scenario.client import ScenarioClient
from ..scenario.models import Job, JobStatus, iso
from ..scenario.outcomes import Gone, JobEnd, TimedOut, ended

# Longest sleep between rounds. A job added or submitted wakes the watcher at once, so
# this is only a safety net; at 1 s it woke the process once more in every wave of jobs
# that run longer than a second, for nothing.
IDLE = 30.0


# A listing asks for jobs created after the oldest watched one, less a margin: a second
# or two when `created` is our clock's (the server's may be behind), a little when it is
# the server's own createdAt. A wider margin costs every listing the jobs it adds back.
SKEW_MARGIN = 2.0
SERVER_MARGIN = 0.25


@dataclass(slots=True)
class Watch:
    """A job that is submitted and not finished."""

    task: Task
    hop: int  # 0-based hop of the task this job is for
    job_id: str
    started: float  # monotonic time the job was submitted (estimated on resume)
    next_poll: float
    cost: float | None = None
    created: float | None = None  # createdAt as epoch seconds: the server's, or our clock's guess at it
    margin: float = SKEW_MARGIN  # how far a listing reaches back before `created`
    polls: int = 0
    errors: int = 0
    misses: int = 0  # listings that did not show it at all: ask it directly next time

    @property
    def listable(self) -> bool:
        """A listing can settle it: its createdAt is known and listings have not missed it twice."""
        return self.misses < 2 and self.created is not None


class Watcher:
    """Polls running jobs; `run()` lives in the runner's TaskGroup."""

    def __init__(
        self,
        client: ScenarioClient,
        *,
        first: float,
        longest: float,
        concurrency: int,
        job_timeout: float,
        backoff: Backoff,
        on_end: Callable[[Watch, JobEnd], Awaitable[None]],
        on_error: Callable[[ApiError], None],
    ) -> None:
        self.client = client
        self._first, self._longest = first, longest
        self._concurrency = concurrency
        self._job_timeout = job_timeout
        self._backoff = backoff
        self._on_end = on_end
        self._on_error = on_error
        self.running: dict[str, Watch] = {}
        self.durations = DurationEstimate()
        self._created: list[float] = []  # createdAt of this run's jobs, sorted, to size listings
        self._wake = asyncio.Event()
        self._list_not_before = 0.0

    def add(self, watch: Watch) -> None:
        """Watch a job (one found in the journal on resume, or just submitted)."""
        self.running[watch.job_id] = watch
        if watch.created is not None:
            bisect.insort(self._created, watch.created)
        self._wake.set()

    def submitted(self, task: Task, hop: int, job_id: str, cost: float | None, created: str | None) -> None:
        """Watch a job submitted just now; its first poll is when jobs like it end.

        `created` is the createdAt the API answered with; without one, our clock stands in.
        """
        now = time.monotonic()
        first = next_poll(0.0, self.durations.value, self._first, self._longest)
        server = epoch(created)
        when, margin = (server, SERVER_MARGIN) if server is not None else (time.time(), SKEW_MARGIN)
        self.add(Watch(task, hop, job_id, now, now + first, cost, created=when, margin=margin))

    async def _end(self, watch: Watch, outcome: JobEnd, job: Job | None = None) -> None:
        del self.running[watch.job_id]
        if job is not None and job.status == JobStatus.SUCCESS:
            # The server's own timestamps, when it gives them, are free of our polling delay.
            start, end = epoch(job.created_at), epoch(job.updated_at)
            observed = time.monotonic() - watch.started
            self.durations.add(end - start if start is not None and end is not None and end >= start else observed)
        await self._on_end(watch, outcome)

    async def run(self) -> None:
        """Ask about running jobs when they are due: one list call for many, or a GET each."""
        limit = asyncio.Semaphore(self._concurrency)
        while True:
            now = time.monotonic()
            due = [a for a in self.running.values() if a.next_poll <= now]
            if not due:
                wait = min((a.next_poll for a in self.running.values()), default=now + IDLE) - now
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(IDLE, max(0.005, wait))):
                        await self._wake.wait()
                continue
            listable = [a for a in due if a.listable]
            unlisted = [a for a in due if not a.listable]
            # One list call also settles jobs that are not due yet but have probably ended.
            estimate = self.durations.value
            likely = [
                a
                for a in self.running.values()
                if a.listable and a.next_poll > now and (estimate is None or now - a.started >= 0.8 * estimate)
            ]
            if prefer_list(len(listable) + len(likely), self._pages_for(listable + likely)):
                if now < self._list_not_before:
                    # Listings are shared by every job: pace them, the due jobs wait their turn.
                    await asyncio.sleep(self._list_not_before - now)
                    continue
                for active in due:
                    active.next_poll = float("inf")  # not due again until this round decides
                self._list_not_before = now + self._list_gap(estimate)
                due = await self._poll_listed(listable, likely) + unlisted
            for active in due:
                active.next_poll = float("inf")
            async with asyncio.TaskGroup() as tg:
                for active in due:
                    tg.create_task(self._poll(active, limit))

    def _list_gap(self, estimate: float | None) -> float:
        """Least time between two listings: a share of a typical job, or of the oldest one's age."""
        if estimate is not None:
            return max(MIN_STEP, estimate * LIST_STEP)
        oldest = max((time.monotonic() - a.started for a in self.running.values()), default=0.0)
        return poll_delay(oldest, self._first, self._longest)

    def _pages_for(self, due: list[Watch]) -> int:
        """List pages needed to cover `due`: our jobs created since the oldest of them."""
        if not due:
            return 0
        oldest = min(a.created or 0.0 for a in due)
        newer = len(self._created) - bisect.bisect_left(self._created, oldest - 1.0)
        return max(1, -(-newer // PAGE))

    async def _poll_listed(self, due: list[Watch], likely: list[Watch]) -> list[Watch]:
        """One pass over the list of finished jobs; returns the due jobs it did not settle."""
        # Everything running is in the same listing: settle or reschedule all of it, in
        # step, so the next round is again one call for every job instead of a trickle.
        wanted = {a.job_id: a for a in self.running.values() if a.listable}
        wanted.update((a.job_id, a) for a in (*due, *likely))
        late: list[Watch] = []  # due jobs past --job-timeout: _poll settles them
        since = iso(min((a.created or 0.0) - a.margin for a in wanted.values()))
        pages = self._pages_for(list(wanted.values()))
        token: str | None = None
        for _ in range(pages + 3):  # pages may be short (the SDK allows it): a few more requests at most
            try:
                # No status filter: one listing tells finished, failed and running apart.
                jobs, token = await self.client.list_jobs(
                    created_after=since, page_size=PAGE, pagination_token=token, keep=wanted.__contains__, brief=True
                )
            except ApiError as err:
                if isinstance(err, CredentialsError):
                    raise
                self._on_error(err)
                break  # the due jobs not seen are asked one by one below
            for job in jobs:
                active = wanted.pop(job.id, None)
                if active is None:
                    continue
                active.polls += 1
                active.misses = 0
                if job.terminal:
                    await self._end(active, _ended(active, job), job)
                elif self._timed_out(active):
                    active.next_poll = float("inf")
                    late.append(active)
                else:
                    self._reschedule(active)  # just observed running: its own schedule restarts
            if not wanted or not token:
                break
        for active in due:
            if active.job_id in wanted:  # not in the listing at all: ask it directly next time
                active.misses += 1
                self._reschedule(active)
        return late

    def _timed_out(self, active: Watch) -> bool:
        return time.monotonic() - active.started > self._job_timeout

    def _reschedule(self, active: Watch) -> None:
        now = time.monotonic()
        active.next_poll = now + self._next_delay(active, now)

    def _next_delay(self, active: Watch, now: float) -> float:
        return next_poll(now - active.started, self.durations.value, self._first, self._longest)

    async def _poll(self, active: Watch, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                job = await self.client.get_job(active.job_id)
            except ApiError as err:
                if isinstance(err, CredentialsError):
                    raise
                active.errors += 1
                self._on_error(err)
                if err.status == 404:
                    await self._end(active, Gone())
                elif self._timed_out(active):  # no usable answer for the whole deadline: it ends too
                    await self._give_up(active, f"no usable answer about the job ({err})")
                else:
                    active.next_poll = time.monotonic() + self._backoff.delay(active.errors, err.retry_after)
                return
        active.polls += 1
        active.errors = 0
        now = time.monotonic()
        if (created := epoch(job.created_at)) is not None:
            active.created, active.margin = created, SERVER_MARGIN
        if job.terminal:
            await self._end(active, _ended(active, job), job)
        elif self._timed_out(active):
            await self._give_up(active, f"job still {job.status}")
        else:
            active.next_poll = now + self._next_delay(active, now)

    async def _give_up(self, active: Watch, why: str) -> None:
        """Past --job-timeout: cancel the job if the API lets us (the deadline stands either way)."""
        with contextlib.suppress(ApiError):
            await self.client.cancel_job(active.job_id)
        await self._end(active, TimedOut(f"{why} after {self._job_timeout:.0f}s (--job-timeout)"))


def _ended(active: Watch, job: Job) -> JobEnd:
    return ended(job, keeps_charge=active.task.keeps_charge, quoted=active.cost)

"""Finding the job an unanswered POST may have created, before anything is paid twice.

A POST whose answer was lost (a cut connection, a 5xx, a 2xx without a usable job, or
a process killed between sending it and journaling the answer) may have created and
billed a job. Before any retry, the account's jobs created since the intent are
listed, and a job whose echoed input has every parameter sent, with the same value,
is adopted. Every task carries an explicit seed, so the match is exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from ..core.retry import Backoff, retry_call
from .client import ScenarioClient
from .models import Job, JobStatus, iso

# How far before an intent to look for its job: covers clock skew between us and the API.
MARGIN = 600.0
_DEAD = (JobStatus.FAILURE, JobStatus.CANCELED)


@dataclass(frozen=True, slots=True)
class Unsure:
    """A submission whose POST may have created a job: what was sent, and when."""

    key: str
    body: Mapping[str, object]
    since: float


def matches(sent: Mapping[str, object], echoed: Any) -> bool:
    """True when a job's echoed input has every parameter we sent, with the same value.

    Extra keys the API adds (its defaults) do not matter; 8 and 8.0 are the same value.
    """
    return isinstance(echoed, Mapping) and all(k in echoed and echoed[k] == v for k, v in sent.items())


class Finder:
    """Looks for jobs among the account's (the project's) recent ones.

    `known` holds every job id the batch already has (the ledger's live view): such a job
    is some task's, so it is never adopted for another.
    """

    def __init__(
        self,
        client: ScenarioClient,
        policy: Backoff,
        observe: Callable[[BaseException], None],
        known: AbstractSet[str] = frozenset(),
    ) -> None:
        self._client = client
        self._policy = policy
        self._observe = observe
        self._known = known

    def _retry(self, call: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        return retry_call(self._policy, call, observe=self._observe)

    async def jobs_since(self, since: float) -> AsyncIterator[Job]:
        """The live jobs created after `since` (less a clock-skew margin), each page retried."""
        pages = self._client.iter_jobs(created_after=iso(since - MARGIN), page_size=100, retry=self._retry)
        async for job in pages:
            if job.status in _DEAD:
                continue
            if not job.input:
                # Some listings leave out metadata.input; matching needs it, so ask the job.
                job = await self._fetch(job.id)
            yield job

    async def _fetch(self, job_id: str) -> Job:
        job: Job = await self._retry(lambda: self._client.get_job(job_id))
        return job

    async def find(self, unsure: Unsure) -> Job | None:
        """The job `unsure`'s POST created, if it did (a wrong 'no' would pay twice)."""
        found = await self.adopt([unsure])
        return found.get(unsure.key)

    async def adopt(self, pending: Sequence[Unsure]) -> dict[str, Job]:
        """Jobs for as many of `pending` as exist, by key, from one pass over the listing."""
        by_seed: dict[tuple[object, object], list[Unsure]] = {}
        for item in pending:
            by_seed.setdefault((item.body.get("prompt"), item.body.get("seed")), []).append(item)
        found: dict[str, Job] = {}
        if not pending:
            return found
        async for job in self.jobs_since(min(item.since for item in pending)):
            if job.id in self._known:
                continue
            for item in by_seed.get((job.input.get("prompt"), job.input.get("seed")), []):
                if item.key not in found and matches(item.body, job.input):
                    found[item.key] = job
                    break
            if len(found) == len(pending):
                break
        return found

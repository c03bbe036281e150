"""Submitting one job: intent on disk, through the gate, POST, job id on disk.

The order is the promise: the intent is fsynced before the POST can be sent, and the
job id as soon as the POST answers. An answer that may mean a job exists (a 5xx, a cut
connection, a 2xx without a usable job) is checked against the account's jobs before
any retry, and after `MAX_UNSURE` such answers the submission is left to the next run:
a server that creates jobs it never shows cannot make batchgen pay again and again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..core.errors import ApiError, BatchgenError, CredentialsError, HeldOff, MalformedAnswer
from ..core.events import Intent, Submitted, Withdrawn
from ..core.retry import Backoff, Retrying, rate_limited, transient
from ..core.task import Task
from ..scenario.client import ScenarioClient
from ..scenario.limits import Admission
from ..scenario.reconcile import Finder, Unsure
from ..store.ledger import Ledger

# POSTs that may each have created a job, looked up and not found, before the task is left
# for the next run: a lost answer (5xx, cut connection) is common and usually means no job.
# A 2xx without a usable job means the server took the request: if the job cannot be
# found, sending it again would most likely pay twice, so it is never sent again.
MAX_UNSURE = 6
MAX_ODD_ANSWERS = 1


class Stopped(BatchgenError):
    """The run is stopping: the POST was never sent (the intent is withdrawn)."""


class Unresolved(BatchgenError):
    """A POST may have created a job and nothing could say whether: left for the next run."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A job that exists for a hop: its id, the quoted cost, and whether it was found, not answered."""

    job_id: str
    cost: float | None
    adopted: bool = False
    discount: float | None = None
    details: Mapping[str, float] = field(default_factory=dict)
    created: str | None = None  # the job's createdAt, as the server wrote it


def hop_body(ledger: Ledger, task: Task, hop: int) -> dict[str, object]:
    """What to POST for hop `hop` of `task`: its input is the upload, or the previous hop's output."""
    if hop == 0:
        return task.hop_body(0, ledger.uploads.get(task.audio_sha256 or ""), ledger.uploads)
    st = ledger.state(task.name)
    assert st is not None and st.hops[hop - 1].asset_ids
    return task.hop_body(hop, st.hops[hop - 1].asset_ids[0])


class Submitter:
    """Submits hops of tasks; shared by every submit worker."""

    def __init__(
        self,
        client: ScenarioClient,
        ledger: Ledger,
        admission: Admission,
        finder: Finder,
        policy: Backoff,
        *,
        halt: asyncio.Event,
        observe: Callable[[BaseException], None],
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._admission = admission
        self._finder = finder
        self._policy = policy
        self._halt = halt
        self._observe = observe

    async def submit(self, task: Task, hop: int, body: Mapping[str, object]) -> Sent:
        """POST hop `hop` (0-based) of `task`; the job id is journaled before this returns."""
        st = self._ledger.state(task.name)
        attempt = (st.attempts if st else 0) + 1
        since = time.time()
        await self._ledger.commit(
            Intent(task=task.name, hop=hop + 1, hops=task.hop_count, digest=task.digest, attempt=attempt)
        )
        sent = await self._post(task, hop, body, since)
        await self._ledger.commit(
            Submitted(
                task=task.name,
                hop=hop + 1,
                job_id=sent.job_id,
                cost=sent.cost,
                adopted=sent.adopted,
                discount=sent.discount or None,
                cost_details=dict(sent.details) if sent.details else None,
            )
        )
        return sent

    async def _post(self, task: Task, hop: int, body: Mapping[str, object], since: float) -> Sent:
        unsure = odd = 0
        # The patient budget covers 429s; everything else transient counts as an attempt.
        retrying = Retrying(self._policy, on=transient, patient=rate_limited, observe=self._observe, hold_off=True)
        try:
            async for attempt in retrying:
                with attempt:
                    if unsure:
                        if (found := await self._look(task, body, since)) is not None:
                            return found
                        if unsure >= MAX_UNSURE or odd >= MAX_ODD_ANSWERS:
                            raise Unresolved(f"{unsure} submissions went unanswered and no job was found for them")
                    slot = await self._admission.admit(self._halt)
                    if slot is None:
                        if not unsure:
                            self._ledger.record(Withdrawn(task=task.name, hop=hop + 1))  # nothing was sent
                            raise Stopped("stopping before the POST")
                        raise Unresolved("stopping while a submission's fate is unknown")
                    try:
                        with slot, self._ledger.expecting():  # its answer's fsync round waits for it
                            answer = await self._client.generate(task.model, body, departed=slot.departed)
                        if answer.job.id in self._ledger.owners:  # the new job's id is not this one
                            raise MalformedAnswer(
                                f"the API answered with job {answer.job.id}, given before", ambiguous=True
                            )
                    except ApiError as err:
                        if err.ambiguous:
                            unsure += 1  # the next attempt looks for the job before POSTing again
                            odd += isinstance(err, MalformedAnswer)
                        raise
                    job = answer.job
                    return Sent(job.id, answer.cost, False, answer.discount, answer.cost_details, job.created_at)
        except HeldOff:
            if unsure:  # an earlier POST may have made a job: the next run looks for it first
                raise Unresolved("the API asked to come back later while a submission's fate is unknown") from None
            self._ledger.record(Withdrawn(task=task.name, hop=hop + 1))  # a 429 creates nothing
            raise
        raise AssertionError("unreachable: Retrying ends by returning or raising")

    async def _look(self, task: Task, body: Mapping[str, object], since: float) -> Sent | None:
        try:
            job = await self._finder.find(Unsure(task.name, body, since))
        except ApiError as err:
            if isinstance(err, CredentialsError):
                raise
            raise Unresolved(f"could not check whether a submission went through ({err})") from None
        return None if job is None else Sent(job.id, job.charge, adopted=True, created=job.created_at)

"""Before anything is submitted: upload input audio, settle unsure submissions, price what is left.

Nothing here can be half done in a way the journal does not say, so a signal stops it
at once. Each step settles what it can: an upload that fails fails its tasks, a job
found for an unsure submission is adopted (and then polled), an unsure submission
whose fate the job list cannot tell is left for the next run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ..core.errors import ApiError, BatchgenError, CredentialsError
from ..core.events import Submitted, Uploaded
from ..core.task import Task
from ..scenario.client import ScenarioClient
from ..scenario.reconcile import Finder, Unsure
from ..store.cost import Pricer, shape
from ..store.ledger import Ledger
from .config import RunConfig
from .progress import Reporter
from .submit import hop_body
from .triage import Plan, Step


class Declined(BatchgenError):
    """The user said no to the estimated spend."""


class Prepare:
    """The phase before the pool, for one run."""

    def __init__(
        self,
        client: ScenarioClient,
        ledger: Ledger,
        config: RunConfig,
        reporter: Reporter,
        *,
        pricer: Pricer,
        finder: Finder,
        observe: Callable[[BaseException], None],
        fail: Callable[[str, str], None],
        defer: Callable[[str, str], None],
        confirm: Callable[[float, int], Awaitable[bool]] | None,
    ) -> None:
        self._client, self._ledger, self._config, self._reporter = client, ledger, config, reporter
        self._pricer, self._finder, self._observe = pricer, finder, observe
        self._fail, self._defer, self._confirm = fail, defer, confirm
        self.estimate: float | None = None

    async def __call__(self, plan: Plan, still_open: Callable[[str], bool]) -> None:
        await self.upload_inputs(plan)
        if plan.reconcile:
            await self.reconcile(plan)
        plan.submit = [step for step in plan.submit if still_open(step[0].name)]
        await self.price(plan.submit)

    async def upload_inputs(self, plan: Plan) -> None:
        """Upload each distinct local input file once per batch (cached by content hash)."""
        ledger = self._ledger
        users: dict[str, tuple[str, list[Task]]] = {}
        for task, hop in (*plan.submit, *plan.reconcile):
            if hop != 0:
                continue
            for item in task.local_files:
                if item.sha256 not in ledger.uploads:
                    users.setdefault(item.sha256, (item.path, []))[1].append(task)
        if users:
            from ..scenario.uploads import upload_audio  # only batches with local input files upload
        for sha, (path, group) in users.items():
            try:
                asset_id = await upload_audio(
                    self._client,
                    path,
                    policy=self._config.backoff,
                    first_poll=min(0.5, self._config.poll_interval),
                    observe=self._observe,
                )
            except ApiError as err:
                if isinstance(err, CredentialsError):
                    raise
                for name in dict.fromkeys(task.name for task in group):  # a task naming the file twice fails once
                    self._fail(name, f"upload of input file {path} failed: {err}")
                continue
            await ledger.commit(Uploaded(sha256=sha, asset_id=asset_id, path=str(path)))
            self._reporter.event("uploaded", path=path, asset=asset_id)

    async def reconcile(self, plan: Plan) -> None:
        """Adopt jobs whose POST was sent but whose id never reached the journal."""
        ledger = self._ledger
        pending: list[tuple[Task, int, Unsure]] = []
        for task, hop in plan.reconcile:
            st = ledger.state(task.name)
            since = st.intent_at if st is not None and st.intent_at is not None else time.time()
            pending.append((task, hop, Unsure(f"{task.name}\x00{hop}", hop_body(ledger, task, hop), since)))
        try:
            found = await self._finder.adopt([unsure for _, _, unsure in pending])
        except ApiError as err:
            if isinstance(err, CredentialsError):
                raise
            # Without the list we cannot tell; resubmitting could pay twice, so leave
            # these tasks for the next run rather than guess.
            for task, _, _ in pending:
                self._defer(task.name, f"could not check whether its earlier submission exists ({err}); rerun")
            return
        for task, hop, unsure in pending:
            job = found.get(unsure.key)
            if job is None:
                plan.submit.append((task, hop))
                continue
            await ledger.commit(Submitted(task=task.name, hop=hop + 1, job_id=job.id, cost=job.charge, adopted=True))
            self._reporter.event("adopted", task.name, job=job.id)
            plan.poll.append((task, hop))

    async def price(self, steps: list[Step]) -> None:
        """Estimate what the submissions will cost, and ask before a big spend."""
        config, pricer, reporter = self._config, self._pricer, self._reporter
        if not steps or not (config.estimate or config.max_cost is not None):
            return
        shapes = {shape(t, h) for t, first in steps for h in range(first, t.hop_count)} - set(pricer.prices)
        if config.max_cost is None and len(shapes) > config.max_price_shapes:
            reporter.event("estimate", message=f"skipped: {len(shapes)} price shapes would take as many dry runs")
            return
        try:
            total, _ = await pricer.total(steps)
        except ApiError as err:
            if isinstance(err, CredentialsError) or config.max_cost is not None:
                raise  # with a cap, running without prices could overspend
            reporter.event("estimate", message=f"unavailable: {err}")
            return
        self.estimate = total
        cap = f" of --max-cost {config.max_cost:g}" if config.max_cost is not None else ""
        spent = self._ledger.book.spent
        reporter.event(
            "estimate", message=f"{total:g} CU for {len(steps)} task(s) to submit{cap}; {spent:g} CU spent so far"
        )
        if self._confirm is not None and not await self._confirm(total, len(steps)):
            raise Declined(f"not confirmed: nothing submitted ({total:g} CU estimated for {len(steps)} tasks)")

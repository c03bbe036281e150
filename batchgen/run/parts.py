"""One run's collaborators, wired together once: queues, gate, budget, pricer, submitter, watcher, finisher.

Nothing here decides anything about a task; it builds the pieces the runner drives and
answers small questions about them (the body of a hop, whether a task fits the
budget, what a 429 changes).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..audio.stitch import make_track
from ..core.state import STATE_DIR
from ..core.task import Task
from ..scenario.assets import AssetBatcher
from ..scenario.client import ScenarioClient
from ..scenario.limits import Admission
from ..scenario.outcomes import JobEnd
from ..scenario.reconcile import Finder
from ..store.cost import Budget, Pricer, load_prices
from ..store.ledger import Ledger
from .config import RunConfig
from .dryrun import dry_runner
from .finish import HOPS, Finisher
from .progress import Reporter
from .submit import Submitter
from .triage import Plan, Step
from .watcher import Watch, Watcher

STITCH = -1  # a download-queue entry that stitches a chain whose hops are all on disk


class Parts:
    """The pieces of one run, built from its config, client and ledger."""

    def __init__(
        self,
        client: ScenarioClient,
        ledger: Ledger,
        config: RunConfig,
        reporter: Reporter,
        *,
        halt: asyncio.Event,
        on_end: Callable[[Watch, JobEnd], Awaitable[None]],
    ) -> None:
        self.client, self.ledger, self.config, self.reporter = client, ledger, config, reporter
        self.folder: Path = ledger.folder
        self.submit_q: asyncio.Queue[Step] = asyncio.Queue()
        self.download_q: asyncio.Queue[Step] = asyncio.Queue()
        self.admission = Admission(config.rate, config.max_in_flight, config.backoff)
        self.budget = Budget(spent=lambda: ledger.book.spent, cap=config.max_cost)
        dry_run = dry_runner(client, self.admission, config.backoff, ledger.uploads, self.saw)
        self.pricer = Pricer(dry_run, load_prices(self.folder))
        self.finder = Finder(client, config.backoff, self.saw, known=ledger.owners.keys())
        self.submitter = Submitter(
            client, ledger, self.admission, self.finder, config.backoff, halt=halt, observe=self.saw
        )
        self.assets = AssetBatcher(client, policy=config.backoff, observe=self.saw)
        self.finisher = Finisher(
            client, self.assets, ledger, self.folder, limits=config.limits, policy=config.backoff, stitch=make_track
        )
        self.watcher = Watcher(
            client,
            first=config.poll_interval,
            longest=config.poll_max,
            concurrency=config.poll_concurrency,
            job_timeout=config.job_timeout,
            backoff=config.backoff,
            on_end=on_end,
            on_error=self.saw,
        )

    def enqueue(self, plan: Plan) -> None:
        """Put a run's plan on the queues; jobs already running count against the cap and are watched."""
        for step in plan.submit:
            self.submit_q.put_nowait(step)
        now = time.monotonic()
        for task, hop in plan.poll:
            st = self.ledger.state(task.name)
            assert st is not None
            job_id, cost = st.hops[hop].job_id or "", st.hops[hop].cost
            age = max(0.0, time.time() - (st.updated or time.time()))
            self.budget.held[(task.name, hop)] = cost or 0.0
            self.admission.jobs.take_now()  # already running on the server: counts against the cap
            self.watcher.add(Watch(task, hop, job_id, now - age, now, cost, created=st.updated))
        for step in plan.download:
            self.download_q.put_nowait(step)
        for task in plan.stitch:
            self.download_q.put_nowait((task, STITCH))

    def hop_files(self) -> dict[str, int]:
        """The hop files on disk (chained tracks) and their sizes."""
        try:
            with os.scandir(self.folder / STATE_DIR / HOPS) as entries:
                return {
                    e.name: e.stat(follow_symlinks=False).st_size for e in entries if e.is_file(follow_symlinks=False)
                }
        except OSError:
            return {}

    def saw(self, err: BaseException) -> None:
        """Any error on its way to a retry: a 429 pauses every submitter."""
        pause = self.admission.saw(err)
        if pause is None:
            return
        if pause.lowered_to is not None:
            self.reporter.event(
                "limit", message=f"the API allows {pause.lowered_to} jobs at once; in-flight cap lowered"
            )
        self.reporter.event("cooldown", seconds=round(pause.seconds, 2))

    def body(self, task: Task, hop: int) -> dict[str, object]:
        """What to POST for hop `hop` of `task`: its input is the upload, or the previous hop's output."""
        if hop == 0:
            return task.hop_body(0, self.ledger.uploads.get(task.audio_sha256 or ""))
        st = self.ledger.state(task.name)
        assert st is not None and st.hops[hop - 1].asset_ids
        return task.hop_body(hop, st.hops[hop - 1].asset_ids[0])

    async def reserve(self, task: Task, hop: int) -> bool:
        """Hold what the task's remaining hops cost against --max-cost; False if they won't fit."""
        budget = self.budget
        if budget.cap is None:
            budget.held.setdefault((task.name, hop), self.pricer.known(task, hop) or 0.0)
            return True
        if budget.holds(task.name):  # a chain under way holds its hops already; a retried hop needs its own
            prices = {hop: await self.pricer.price(task, hop)}
        else:  # a task (or what is left of a chain) starts only if all of it fits
            prices = await self.pricer.hops(task, hop)
        if budget.reserve(task.name, prices):
            return True
        self.reporter.event(
            "budget",
            task.name,
            message=f"left: {sum(prices.values()):g} CU would pass --max-cost {budget.cap:g} "
            f"(spent {budget.spent():g}, running {budget.committed:g})",
        )
        return False

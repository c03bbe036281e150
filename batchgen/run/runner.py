"""Orchestration: one run of a batch, from its ledger to a settled batch or a graceful stop.

The ledger decides everything on start (`triage`): done tasks are skipped, jobs already
submitted are polled (never submitted again), an intent without a job id is looked
for on the server, finished jobs go straight to download, chains resume at their hop.
Then one TaskGroup runs a fixed pool of submit workers, the watcher and download
workers until every task of this run is settled. Task state changes only through the
ledger; the runner keeps its queues and what its workers are doing right now.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..audio.stitch import make_track
from ..core import events
from ..core.errors import ApiError, BatchgenError, CredentialsError, DiskError, DownloadError, ErrorKind, HeldOff
from ..core.task import Task
from ..manifest.parse import Manifest, expand
from ..scenario.assets import AssetBatcher
from ..scenario.client import ScenarioClient
from ..scenario.limits import Admission
from ..scenario.outcomes import Canceled, Failed, Gone, JobEnd, Succeeded, TimedOut
from ..scenario.reconcile import Finder
from ..store.cost import Pricer, load_prices, save_prices
from ..store.layout import Layout
from ..store.ledger import Ledger
from ..store.lock import BatchLock
from .config import RunConfig
from .dryrun import dry_runner
from .finish import Fetched, Finisher, StitchFailed
from .halt import Halt
from .prepare import Declined, Prepare
from .progress import Counts, Reporter
from .result import RunResult
from .spending import Spending
from .stopping import Interrupted, Stop
from .submit import Stopped, Submitter, Unresolved, hop_body
from .triage import Plan, Step, triage
from .watcher import Watch, Watcher

STITCH = -1  # a download-queue entry that stitches a chain whose hops are all on disk


class Runner:
    """Runs one batch to completion (or to a graceful stop) against one client."""

    def __init__(
        self,
        manifest: Manifest,
        client: ScenarioClient,
        config: RunConfig,
        reporter: Reporter | None = None,
        confirm: Callable[[float, int], Awaitable[bool]] | None = None,
        started: Callable[[Path], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self._started = started  # told the batch folder once the batch has expanded and its lock is held
        self.client = client
        self.config = config
        self.reporter = reporter or Reporter(quiet=True)
        self.folder = config.out / manifest.batch
        self._confirm = confirm
        self.tasks: list[Task] = []  # the manifest's tasks, once expanded: the page is made from them
        self.ledger: Ledger | None = None  # the batch's ledger, once open: read after the run by the page

    async def run(self) -> RunResult:
        """Run the batch; raises BatchgenError for what must stop it (credentials, disk, manifest)."""
        t0 = time.monotonic()
        fresh = not Layout(self.folder).journal.exists()
        base: int | None = None
        if fresh:  # the whole expansion is checked before anything is created
            base = self.manifest.seed if self.manifest.seed is not None else random.SystemRandom().randrange(2**31)
            self.tasks = expand(self.manifest, base)
        with BatchLock(Layout(self.folder).lock):
            ledger = self.ledger = Ledger.open(self.folder, self.manifest.batch)
            try:
                for warning in ledger.warnings:
                    self.reporter.event("warning", message=warning, error=True)
                if (done := ledger.compacted) is not None:
                    self.reporter.event("compacted", message=done.summary)
                if not fresh:
                    base = ledger.base_seed
                    if self.manifest.seed is None and base is None:
                        base = random.SystemRandom().randrange(2**31)  # drawn once, kept in the journal
                    self.tasks = expand(self.manifest, base)
                ledger.start(self.manifest.batch, base if self.manifest.seed is None else None)
                if self._started is not None:
                    self._started(self.folder)
                return await _Run(self.client, ledger, self.tasks, self.config, self.reporter, self._confirm).run(t0)
            finally:
                ledger.close()


class _Run:
    """The one orchestrator of a run: its collaborators, queues and halt state, built once for an open ledger."""

    def __init__(
        self,
        client: ScenarioClient,
        ledger: Ledger,
        tasks: list[Task],
        config: RunConfig,
        reporter: Reporter,
        confirm: Callable[[float, int], Awaitable[bool]] | None,
    ) -> None:
        self.client, self.ledger, self.tasks, self.config, self.reporter = client, ledger, tasks, config, reporter
        self.folder = ledger.folder
        self._confirm = confirm
        self._open: set[str] = set()  # tasks this run still works on
        self._finished = asyncio.Event()
        self._halt = Halt.RUNNING  # why submitting stopped, if it did: the one halt state
        self._halted = asyncio.Event()  # set with it, for waits that should end at once
        self._disk_error: DiskError | None = None  # what DISK was about
        self._held_off: HeldOff | None = None  # what HELD_OFF was about
        self._left_for_wait: set[str] = set()  # tasks left unsubmitted because of that
        self._paid_twice: list[str] = []  # chain hops made again after landing unusable
        self._submitting = self._downloading = 0
        self._missing: set[str] = set()  # done tasks whose files are fetched again
        self._counts = Counts()
        self._recorded0 = ledger.recorded.copy()
        self._submit_q: asyncio.Queue[Step] = asyncio.Queue()
        self._download_q: asyncio.Queue[Step] = asyncio.Queue()
        self._admission = Admission(config.rate, config.max_in_flight, config.backoff)
        self._jobs = self._admission.jobs  # the in-flight cap
        dry_run = dry_runner(client, self._admission, config.backoff, ledger.uploads, self._saw)
        self._pricer = Pricer(dry_run, load_prices(self.folder))
        self._spending = Spending(ledger, self._pricer, config.max_cost, reporter)
        self._finder = Finder(client, config.backoff, self._saw, known=ledger.owners.keys())
        self._submitter = Submitter(
            client, ledger, self._admission, self._finder, config.backoff, halt=self._halted, observe=self._saw
        )
        self._assets = AssetBatcher(client, policy=config.backoff, observe=self._saw)
        self._finisher = Finisher(
            client, self._assets, ledger, self.folder, limits=config.limits, policy=config.backoff, stitch=make_track
        )
        self._watcher = Watcher(
            client,
            first=config.poll_interval,
            longest=config.poll_max,
            concurrency=config.poll_concurrency,
            job_timeout=config.job_timeout,
            backoff=config.backoff,
            on_end=self._job_ended,
            on_error=self._saw,
        )

    async def run(self, t0: float) -> RunResult:
        ledger = self.ledger
        spent0, kept0 = ledger.book.spent, ledger.book.kept
        plan = triage(ledger, self.tasks, retry_failed=self.config.retry_failed, hop_files=self._finisher.hop_files())
        self._missing = {task.name for task in plan.missing}
        for task in plan.missing:
            self.reporter.event("missing", task.name, message="file gone or cut short; fetching it again (no charge)")
        self._open = plan.open
        prepare = Prepare(
            self.client,
            ledger,
            self.config,
            self.reporter,
            pricer=self._pricer,
            finder=self._finder,
            observe=self._saw,
            fail=functools.partial(self._fail, permanent=True),
            defer=self._defer,
            confirm=self._confirm,
        )
        stop = Stop(self.config.grace, self._on_signal)
        try:
            with stop.signals():
                if self._open:
                    try:
                        await stop.run(prepare(plan, lambda name: name in self._open))
                    except HeldOff as err:  # a dry run was told to come back later: submit nothing
                        self._hold_off(err)
                    await stop.run(self._pool(plan), graceful=True)
            interrupted = stop.requested
        except Interrupted:
            interrupted = True
        finally:
            if self._pricer.asked:
                save_prices(self.folder, self._pricer.prices)
        if self._disk_error is not None and not interrupted:
            raise self._disk_error
        result = RunResult(total=len(self.tasks), elapsed=time.monotonic() - t0, interrupted=interrupted)
        result.count(ledger, self.tasks, plan.skipped, plan.failed)
        result.paid_failures = ledger.book.kept - kept0  # this run's, like `spent`
        result.batch_spent = ledger.book.spent
        result.spent, result.calls = result.batch_spent - spent0, dict(self.client.calls)
        result.estimate, result.left_for_budget = prepare.estimate, len(self._spending.left_out)
        result.left_for_wait, result.paid_twice = len(self._left_for_wait), self._paid_twice
        result.held_off = str(self._held_off) if self._held_off is not None else None
        return result

    def _enqueue(self, plan: Plan) -> None:
        """Put a run's plan on the queues; jobs already running count against the cap and are watched."""
        for step in plan.submit:
            self._submit_q.put_nowait(step)
        now = time.monotonic()
        for task, hop in plan.poll:
            st = self.ledger.state(task.name)
            assert st is not None
            age = max(0.0, time.time() - (st.updated or time.time()))
            self._jobs.take_now()  # already running on the server: counts against the cap
            watch = Watch(task, hop, st.hops[hop].job_id or "", now - age, now, st.hops[hop].cost, created=st.updated)
            self._watcher.add(watch)
        for step in plan.download:
            self._download_q.put_nowait(step)
        for task in plan.stitch:
            self._download_q.put_nowait((task, STITCH))

    def _saw(self, err: BaseException) -> None:
        """Any error on its way to a retry: a 429 pauses every submitter."""
        pause = self._admission.saw(err)
        if pause is None:
            return
        if pause.lowered_to is not None:
            self.reporter.event(
                "limit", message=f"the API allows {pause.lowered_to} jobs at once; in-flight cap lowered"
            )
        self.reporter.event("cooldown", seconds=round(pause.seconds, 2))

    async def _pool(self, plan: Plan) -> None:
        """Submit, watch and download until every task of this run is settled."""
        self._enqueue(plan)
        self._tick()
        if not self._open:
            return
        try:
            async with asyncio.TaskGroup() as tg:
                workers = [tg.create_task(self._submit_worker()) for _ in range(self.config.submit_workers)]
                workers += [tg.create_task(self._download_worker()) for _ in range(self.config.downloaders)]
                workers += [tg.create_task(self._watcher.run()), tg.create_task(self._assets.run())]
                if not self.reporter.quiet:
                    workers.append(tg.create_task(self._ticker()))
                await self._finished.wait()
                for worker in workers:
                    worker.cancel()
                self._assets.close()
        except ExceptionGroup as group:  # a worker's error that ends the run (credentials revoked mid-way)
            if not all(isinstance(err, BatchgenError) for err in group.exceptions):
                raise
            raise group.exceptions[0] from None  # the CLI says it in one line, as it would before the pool
        self._tick(force=True)

    async def _submit_worker(self) -> None:
        while True:
            task, hop = await self._submit_q.get()
            if self._halt.stopping:
                continue  # left unsubmitted: the next run submits it
            if self._halt.leaving:
                self._leave(task.name)
                continue
            await self._jobs.acquire()
            self._submitting += 1
            try:
                if not await self._spending.reserve(task, hop):  # its price would pass --max-cost: left
                    await self._jobs.release()
                    self._settle(task.name)
                    continue
                sent = await self._submitter.submit(task, hop, hop_body(self.ledger, task, hop))
            except (ApiError, Stopped, Unresolved, HeldOff) as err:  # the dry run's or the POST's
                await self._jobs.release()  # no job is running for this hop
                self._spending.release(task.name)
                if isinstance(err, CredentialsError):
                    raise
                if isinstance(err, HeldOff):
                    self._hold_off(err)
                if isinstance(err, HeldOff | Stopped) and self._halt.leaving:
                    self._leave(task.name)
                elif isinstance(err, ApiError):
                    self._fail(task.name, f"submit failed: {err}", permanent=err.kind is ErrorKind.PERMANENT)
                elif isinstance(err, Unresolved):
                    self._defer(task.name, f"{err}; rerun to look for its job before anything is sent again")
                continue
            finally:
                self._submitting -= 1
                self._maybe_idle()
            if sent.adopted:
                self.reporter.event("adopted", task.name, job=sent.job_id)
            self._finisher.mark(task.name, "submitted")
            self._watcher.submitted(task, hop, sent.job_id, sent.cost, created=sent.created)

    async def _job_ended(self, watch: Watch, outcome: JobEnd) -> None:
        """The watcher saw a job end (or gave up on it): free its slot and move the task on."""
        await self._jobs.release()
        task, hop, name = watch.task, watch.hop, watch.task.name
        match outcome:
            case Succeeded(job):
                cost = job.charge if job.charge is not None else watch.cost
                details = dict(job.cost_details) if job.cost_details else None
                self.ledger.record(
                    events.Succeeded(
                        task=name, hop=hop + 1, job_id=job.id, asset_ids=job.asset_ids, cost=cost, cost_details=details
                    )
                )
                self._finisher.mark(name, "succeeded")
                self._download_q.put_nowait((task, hop))  # a chain goes on once this hop has landed, checked
            case Failed(reason, refunded, charge):
                self.ledger.record(
                    events.JobFailed(
                        task=name, hop=hop + 1, job_id=watch.job_id, reason=reason, refunded=refunded, cost=charge
                    )
                )
                self._retry_or_fail(watch, reason, paid=None if refunded else charge)
            case Gone(reason):
                self.ledger.record(events.JobFailed(task=name, hop=hop + 1, job_id=watch.job_id, reason=reason))
                self._retry_or_fail(watch, reason, paid=None)
            case Canceled(reason) | TimedOut(reason):
                self._fail(name, _hop_named(task.hop_count, hop, reason), permanent=False)
        self._maybe_idle()

    def _retry_or_fail(self, watch: Watch, reason: str, paid: float | None) -> None:
        task, hop = watch.task, watch.hop
        st = self.ledger.state(task.name)
        failures = st.hops[hop].failures if st else 1
        note = f" (paid {paid:g} CU: the API did not refund this job)" if paid else ""
        if failures <= self.config.job_retries and not self._halt.stopping:
            self.reporter.event("retry", task.name, reason=reason + note)
            self._submit_q.put_nowait((task, hop))
        else:
            why = f"job failed {failures} time(s): {reason}{note}"
            self._fail(task.name, _hop_named(task.hop_count, hop, why), permanent=False)

    async def _download_worker(self) -> None:
        while True:
            task, hop = await self._download_q.get()
            if self._halt is Halt.DISK:
                continue  # the journal says "succeeded": the next run downloads it
            self._downloading += 1
            try:
                if hop == STITCH:
                    fetched = Fetched.DONE if await self._finisher.stitch(task) else Fetched.HOP
                else:
                    fetched = await self._finisher.fetch(task, hop)
                self._landed(task, hop, fetched)
            except StitchFailed as err:
                self._fail(task.name, str(err), permanent=False)
            except DiskError as err:
                self._on_disk_error(err)
            # The job is paid for: a task whose files could not be fetched is not marked
            # failed (--retry-failed would pay again); it stays "succeeded" in the journal
            # and the next run downloads it.
            except DownloadError as err:
                self._defer(task.name, f"download failed: {err.reason} (paid; the next run downloads it again)")
            except ApiError as err:
                if isinstance(err, CredentialsError):
                    raise
                if err.status == 404 and task.name in self._missing:
                    self._missing.discard(task.name)  # its asset is gone from the API: make it again
                    self.reporter.event("regenerate", task.name, message="its asset no longer exists")
                    self._submit_q.put_nowait((task, 0))
                    continue
                self._defer(task.name, f"asset lookup failed: {err} (paid; the next run downloads it again)")
            finally:
                self._downloading -= 1
                self._maybe_idle()

    def _landed(self, task: Task, hop: int, fetched: Fetched) -> None:
        """A job's output is on disk: the task is done, its chain goes on, or a hop is made again."""
        name = task.name
        if fetched is Fetched.DONE:
            st = self.ledger.state(name)
            self.reporter.event("done", name, file=st.files[0]["path"] if st and st.files else None)
            self._settle(name)
        elif fetched is Fetched.HOP and hop + 1 < task.hop_count:
            self._submit_q.put_nowait((task, hop + 1))  # only now: the next hop continues this one's end
        elif fetched is Fetched.UNUSABLE:
            st = self.ledger.state(name)
            redos, why = (st.hops[hop].redos, st.reason) if st else (1, None)  # as `hop_unusable` recorded them
            what = _hop_named(task.hop_count, hop, f"unusable ({why or 'no reason'})")
            if redos > self.config.hop_redos:
                self._fail(name, f"{what}; made {redos} time(s), each paid", permanent=False)
                return
            self._paid_twice.append(f"{name} hop {hop + 1}")
            self.reporter.event("redo", name, message=f"{what}: making it again, paid twice", error=True)
            self._submit_q.put_nowait((task, hop))

    def _fail(self, name: str, reason: str, *, permanent: bool) -> None:
        st = self.ledger.state(name)
        self.ledger.record(
            events.Failed(task=name, reason=reason, permanent=permanent, attempt=st.attempts if st else 0)
        )
        self.reporter.event("failed", name, reason=reason, error=True)
        self._settle(name)

    def _defer(self, name: str, reason: str) -> None:
        """Leave a task as the journal has it, for the next run; it counts as not done."""
        self.ledger.record(events.Deferred(task=name, reason=reason))  # `status` says why it waits
        self.reporter.event("deferred", name, reason=reason, error=True)
        self._settle(name)

    def _hold_off(self, err: HeldOff) -> None:
        """The API asked us to come back after --max-wait: submit nothing more in this run.

        Jobs already running are still followed and downloaded; the tasks not submitted
        stay as they are (not failed) and the next run submits them."""
        if self._held_off is None:
            self._held_off = err
            self._halt_for(Halt.HELD_OFF)  # submitters waiting at the gate give up now
            self.reporter.event(
                "held-off", message=f"{err}: no new submissions in this run; running jobs are finished", error=True
            )

    def _leave(self, name: str) -> None:
        self._left_for_wait.add(name)
        self._settle(name)

    def _settle(self, name: str) -> None:
        self._open.discard(name)
        if not self._open:
            self._finished.set()

    def _on_signal(self, second: bool) -> None:
        if second:
            self.reporter.event("stop", message="second signal: stopping now", error=True)
            return
        self._halt_for(Halt.SIGNAL)
        grace = f"up to {self.config.grace:.0f}s"
        self.reporter.event(
            "stop", message=f"stopping: no new submissions; finishing what is under way ({grace})", error=True
        )
        self._maybe_idle()

    def _on_disk_error(self, err: DiskError) -> None:
        """Writing failed: submit nothing more, keep polling what is paid for, then stop."""
        if self._disk_error is None:
            self._disk_error = err
            self._halt_for(Halt.DISK)
            self.reporter.event("disk", message=f"{err}; no new submissions, finishing running jobs", error=True)
        self._maybe_idle()

    def _halt_for(self, reason: Halt) -> None:
        """Move the halt state forward: a graver reason wins, a milder one changes nothing."""
        self._halt = max(self._halt, reason)
        self._halted.set()

    def _maybe_idle(self) -> None:
        """End early when stopping and nothing that must finish is mid-way.

        On a signal, that is POSTs and downloads under way (and queued downloads); after
        a disk error, the jobs still running (their results are journaled for the next
        run to download).
        """
        if not self._halt.stopping or self._submitting or self._downloading:
            return
        if self._halt is Halt.DISK:
            if not self._watcher.running:
                self._finished.set()
        elif self._download_q.empty():
            self._finished.set()

    async def _ticker(self) -> None:
        while True:
            self._tick()
            await asyncio.sleep(0.5)

    def _tick(self, force: bool = False) -> None:
        """Refresh the progress line from the ledger's figures and what the workers are doing."""
        counts, recorded = self._counts, self.ledger.recorded
        counts.total = len(self.tasks)
        counts.done = recorded["done"] - self._recorded0["done"]
        counts.failed = sum(recorded[kind] - self._recorded0[kind] for kind in ("failed", "deferred"))
        counts.queued = self._submit_q.qsize()
        counts.submitting, counts.downloading = self._submitting, self._downloading
        counts.running = len(self._watcher.running)
        counts.spent = self.ledger.book.spent
        counts.committed = self._spending.committed
        counts.hops, counts.hops_made = self.ledger.hops_made(self.tasks)
        self.reporter.tick(counts, force=force)


def _hop_named(hops: int, hop: int, reason: str) -> str:
    return f"hop {hop + 1}/{hops}: {reason}" if hops > 1 else reason


__all__ = ["Declined", "RunConfig", "RunResult", "Runner"]

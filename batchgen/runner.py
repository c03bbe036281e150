"""Orchestration: one TaskGroup of submit workers, a poller and download workers.

The journal decides everything on start: done tasks are skipped, jobs already
submitted are polled (never submitted again), an intent without a job id is first
looked for on the server (the crash window), finished jobs go straight to download.
Money events are on disk before the program moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .assets import AssetBatcher
from .client import Asset, Job, ScenarioClient, iso
from .cost import Budget, Pricer, load_prices, pricing_body, save_prices, shape
from .download import FileInfo, download_asset, write_json_atomic
from .errors import (
    ApiError,
    BatchgenError,
    CredentialsError,
    DiskError,
    DownloadError,
    ErrorKind,
    JournalError,
)
from .limits import Cooldown, InFlight, make_throttle
from .lock import BatchLock
from .manifest import Manifest, expand
from .progress import Counts, Reporter
from .retry import Backoff
from .state import STATE_DIR, Journal, Replay, Status, TaskState, journal_path, replay
from .task import Task
from .watcher import Watch, Watcher

# How far before an intent to look for its job: covers clock skew between us and the API.
RECONCILE_MARGIN = 600.0
# 429s in a row for one submission before its task is failed (each waits the server's hint).
MAX_RATE_LIMITED = 200


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Every knob of a run; the CLI fills it from the command line."""

    out: Path = Path("output")
    rate: float = 2.0
    max_in_flight: int = 8
    workers: int | None = None
    download_workers: int = 4
    poll_interval: float = 1.0
    poll_max: float = 15.0
    poll_concurrency: int = 16
    retry_failed: bool = False
    job_retries: int = 1
    job_timeout: float = 1800.0
    max_download_bytes: int = 2 * 1024**3
    grace: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)
    max_cost: float | None = None
    estimate: bool = True  # price what is left with dry runs and say so before submitting
    max_price_shapes: int = 100  # without --max-cost, skip the estimate past this many dry runs

    @property
    def submit_workers(self) -> int:
        # Enough to keep the throttle busy while some wait on a slow POST.
        return self.workers or max(2, min(32, self.max_in_flight, int(self.rate * 2) + 1))


@dataclass(slots=True)
class RunResult:
    """How a run ended: what was done, what failed and why, what it cost."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    spent: float = 0.0
    elapsed: float = 0.0
    interrupted: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    estimate: float | None = None  # creative units the remaining tasks were priced at
    left_for_budget: int = 0  # tasks not submitted because --max-cost would be passed
    batch_spent: float = 0.0  # the batch's total, earlier runs included

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.left_for_budget else 0


class Runner:
    """Runs one batch to completion (or to a graceful stop) against one client."""

    def __init__(
        self,
        manifest: Manifest,
        client: ScenarioClient,
        config: RunConfig,
        reporter: Reporter | None = None,
        confirm: Callable[[float, int], Awaitable[bool]] | None = None,
    ) -> None:
        self.manifest = manifest
        self.client = client
        self.config = config
        self.reporter = reporter or Reporter(quiet=True)
        self.folder = config.out / manifest.batch
        self.counts = Counts()
        self.result = RunResult()
        self._submit_q: asyncio.Queue[Task] = asyncio.Queue()
        self._download_q: asyncio.Queue[tuple[Task, list[str]]] = asyncio.Queue()
        self._states: dict[str, TaskState] = {}
        self._uploads: dict[str, str] = {}
        self._remaining = 0
        self._finished = asyncio.Event()
        self._stopping = False
        self._cooldown = Cooldown()
        self._throttle = make_throttle(config.rate)
        self._inflight = InFlight(config.max_in_flight)
        self._journal: Journal | None = None
        self._assets = AssetBatcher(client, retry=self._with_retries)
        self._confirm = confirm
        self._budget = Budget(cap=config.max_cost)
        self._pricer = Pricer(self._dry_run, load_prices(self.folder))
        self._disk_error: DiskError | None = None
        self._watcher = Watcher(
            client,
            first=config.poll_interval,
            longest=config.poll_max,
            concurrency=config.poll_concurrency,
            job_timeout=config.job_timeout,
            backoff=config.backoff,
            on_end=self._job_ended,
            on_429=self._on_429,
        )
        self.tasks: list[Task] = []
        self._times: dict[str, dict[str, float]] = {}  # wall-clock milestones per task, for sidecars

    @property
    def states(self) -> dict[str, TaskState]:
        """Every task's state as this run left it (what a replay of the journal would give)."""
        return self._states

    @property
    def journal(self) -> Journal:
        assert self._journal is not None
        return self._journal

    async def run(self) -> RunResult:
        """Run the batch; raises BatchgenError for what must stop it (credentials, disk)."""
        t0 = time.monotonic()
        with BatchLock(self.folder / STATE_DIR / "lock"):
            replayed = self._replay()
            self._journal = Journal(self.folder)
            try:
                base_seed = self._header(replayed)
                tasks = self.tasks = expand(self.manifest, base_seed)
                self._states = replayed.tasks
                self._uploads = dict(replayed.uploads)
                self._budget.spent = replayed.spent
                try:
                    await self._run(tasks)
                finally:
                    self.result.elapsed = time.monotonic() - t0
                    self.result.calls = dict(self.client.calls)
                    self.result.left_for_budget = self._budget.left_out
                    self.result.batch_spent = self._budget.spent
                    if self._pricer.asked:
                        save_prices(self.folder, self._pricer.prices)
            finally:
                self.journal.close()
        return self.result

    def _replay(self) -> Replay:
        path = journal_path(self.folder)
        try:
            with path.open("rb") as fh:
                replayed = replay(fh, str(path))
        except FileNotFoundError:
            return Replay()
        for warning in replayed.warnings:
            self.reporter.event("warning", message=warning, error=True)
        if replayed.batch is not None and replayed.batch != self.manifest.batch:
            raise JournalError(
                f"{path}: journal belongs to batch {replayed.batch!r}, not {self.manifest.batch!r}; "
                "use another --out or batch name"
            )
        return replayed

    def _header(self, replayed: Replay) -> int | None:
        base = replayed.base_seed
        if self.manifest.seed is None and base is None:
            base = random.SystemRandom().randrange(2**31)  # drawn once, kept in the journal
        if replayed.batch is None or (base is not None and base != replayed.base_seed):
            self.journal.append(
                "batch", durable=True, v=1, batch=self.manifest.batch, base_seed=base, version=__version__
            )
        return base

    async def _run(self, tasks: list[Task]) -> None:
        self.counts.total = self.result.total = len(tasks)
        to_submit, to_poll, to_download, to_reconcile = self._triage(tasks)
        self._remaining = len(to_submit) + len(to_poll) + len(to_download) + len(to_reconcile)
        if self._remaining == 0:
            return
        await self._upload_inputs([*to_submit, *to_reconcile])
        to_reconcile = [(t, st) for t, st in to_reconcile if t.name not in self.result.failed]
        if to_reconcile:
            to_submit.extend(await self._reconcile(to_reconcile, to_poll))
        to_submit = [t for t in to_submit if t.name not in self.result.failed]
        await self._price(to_submit)
        for task in to_submit:
            self._submit_q.put_nowait(task)
        now = time.monotonic()
        for task, st in to_poll:
            assert st.job_id is not None
            age = max(0.0, time.time() - (st.updated or time.time()))
            self._budget.held[task.name] = st.cost or 0.0
            self._inflight.take_now()  # already running on the server: counts against the cap
            self._watcher.add(Watch(task, st.job_id, now - age, now, st.cost, created=st.updated))
        for task, st in to_download:
            self._download_q.put_nowait((task, list(st.asset_ids)))
        self._update_counts()
        if self._remaining == 0:
            return
        loop = asyncio.get_running_loop()
        with _signals(loop, self._on_signal):
            try:
                async with asyncio.TaskGroup() as tg:
                    workers = [tg.create_task(self._submit_worker()) for _ in range(self.config.submit_workers)]
                    workers += [tg.create_task(self._download_worker()) for _ in range(self.config.download_workers)]
                    workers += [tg.create_task(self._watcher.run()), tg.create_task(self._ticker())]
                    workers.append(tg.create_task(self._assets.run()))
                    await self._finished.wait()
                    for worker in workers:
                        worker.cancel()
                    self._assets.close()
            except BaseExceptionGroup as group:
                raise _first_error(group) from None
        if self._disk_error is not None:
            raise self._disk_error
        self.reporter.tick(self.counts, force=True)
        if self._stopping:
            self.result.interrupted = True

    async def _price(self, tasks: list[Task]) -> None:
        """Estimate what the submissions will cost, and ask before a big spend."""
        if not tasks or not (self.config.estimate or self.config.max_cost is not None):
            return
        shapes = {shape(t) for t in tasks} - set(self._pricer.prices)
        if self.config.max_cost is None and len(shapes) > self.config.max_price_shapes:
            self.reporter.event("estimate", message=f"skipped: {len(shapes)} price shapes would take as many dry runs")
            return
        try:
            total, _ = await self._pricer.total(tasks)
        except ApiError as err:
            if isinstance(err, CredentialsError) or self.config.max_cost is not None:
                raise  # with a cap, running without prices could overspend
            self.reporter.event("estimate", message=f"unavailable: {err}")
            return
        self.result.estimate = total
        cap = f" of --max-cost {self.config.max_cost:g}" if self.config.max_cost is not None else ""
        self.reporter.event(
            "estimate",
            message=f"{total:g} CU for {len(tasks)} task(s) to submit{cap}; {self._budget.spent:g} CU spent so far",
        )
        if self._confirm is not None and not await self._confirm(total, len(tasks)):
            raise Declined(f"not confirmed: nothing submitted ({total:g} CU estimated for {len(tasks)} tasks)")

    async def _dry_run(self, task: Task) -> float:
        """One dry run, through the same rate limit and cooldown as submissions."""

        async def ask() -> float:
            await self._cooldown.wait()
            await self._throttle.acquire()
            body = pricing_body(task, self._uploads.get(task.audio_sha256 or ""))
            return await self.client.estimate(task.model, body)

        return float(await self._with_retries(ask))

    def _triage(
        self, tasks: list[Task]
    ) -> tuple[list[Task], list[tuple[Task, TaskState]], list[tuple[Task, TaskState]], list[tuple[Task, TaskState]]]:
        """Sort tasks by what the journal says is left to do for each."""
        submit: list[Task] = []
        poll: list[tuple[Task, TaskState]] = []
        download: list[tuple[Task, TaskState]] = []
        reconcile: list[tuple[Task, TaskState]] = []
        for task in tasks:
            st = self._states.get(task.name)
            if st is None:
                st = self._states[task.name] = TaskState()
                submit.append(task)
                continue
            same = st.digest == task.digest
            if st.status is Status.DONE and st.done_digest == task.digest:
                if all((self.folder / f["path"]).is_file() for f in st.files):
                    self.result.skipped += 1
                    continue
                self.reporter.event("missing", task.name, message="file gone from disk; generating it again")
                submit.append(task)
            elif st.status is Status.FAILED and same and not self.config.retry_failed:
                self.result.failed[task.name] = f"{st.reason} (failed in an earlier run; --retry-failed to try again)"
            elif st.status is Status.IN_FLIGHT and same:
                poll.append((task, st))
            elif st.status is Status.DOWNLOADING and same:
                download.append((task, st))
            elif st.status is Status.SUBMITTING and same:
                reconcile.append((task, st))
            else:
                if st.status is Status.FAILED or not same:
                    st.job_failures = 0  # a changed task, or a retried one, starts afresh
                submit.append(task)
        self.counts.skipped = self.result.skipped
        self.counts.failed = len(self.result.failed)
        return submit, poll, download, reconcile

    async def _upload_inputs(self, tasks: Iterable[Task | tuple[Task, TaskState]]) -> None:
        """Upload each distinct local input file once per batch (cached by content hash)."""
        users: dict[str, list[Task]] = {}
        for item in tasks:
            task = item[0] if isinstance(item, tuple) else item
            if task.audio_sha256 and task.input_audio and task.audio_sha256 not in self._uploads:
                users.setdefault(task.audio_sha256, []).append(task)
        for sha, group in users.items():
            path = group[0].input_audio
            assert path is not None
            try:
                asset_id = await self._with_retries(
                    lambda path=path: self.client.upload_audio(path, poll_interval=min(1.0, self.config.poll_interval))
                )
            except ApiError as err:
                if isinstance(err, CredentialsError):
                    raise
                for task in group:
                    self._fail(task, f"upload of input audio {path} failed: {err}", permanent=True)
                continue
            self._uploads[sha] = asset_id
            await self.journal.commit("upload", sha256=sha, asset_id=asset_id, path=path)
            self.reporter.event("uploaded", path=path, asset=asset_id)

    async def _reconcile(
        self, pending: list[tuple[Task, TaskState]], to_poll: list[tuple[Task, TaskState]]
    ) -> list[Task]:
        """Adopt jobs whose POST was sent but whose id never reached the journal.

        Lists the account's jobs created since the earliest such intent and matches each
        task by its exact request body (every task carries an explicit seed, so the match
        is unambiguous). Tasks with no match are returned to be submitted.
        """
        earliest = min((st.intent_at or time.time()) for _, st in pending)
        candidates: dict[tuple[object, object], list[tuple[Task, TaskState]]] = {}
        for task, st in pending:
            candidates.setdefault((task.params.get("prompt"), task.seed), []).append((task, st))
        known = {job_id for _, st in pending for job_id in st.job_ids}
        adopted: set[str] = set()
        try:
            async for job in self._jobs_since(earliest):
                if job.id in known or job.status in ("failure", "canceled"):
                    continue
                for task, st in candidates.get((job.input.get("prompt"), job.input.get("seed")), []):
                    if task.name in adopted or not _matches(self._body(task), job.input):
                        continue
                    adopted.add(task.name)
                    await self._record_job(task, job.id, job.cost, adopted=True)
                    to_poll.append((task, st))
                    break
        except ApiError as err:
            if isinstance(err, CredentialsError):
                raise
            # Without the list we cannot tell; resubmitting could pay twice, so leave
            # these tasks for the next run rather than guess.
            self.reporter.event("warning", message=f"could not list jobs to reconcile: {err}", error=True)
            for task, _ in pending:
                if task.name not in adopted:
                    self._defer(task, f"could not check whether its earlier submission exists ({err}); rerun")
            return []
        return [task for task, _ in pending if task.name not in adopted]

    def _body(self, task: Task) -> dict[str, object]:
        return task.body(self._uploads.get(task.audio_sha256 or ""))

    async def _submit_worker(self) -> None:
        while True:
            task = await self._submit_q.get()
            if self._stopping or self._disk_error is not None:
                continue  # left unsubmitted: the next run submits it
            await self._inflight.acquire()
            if not await self._reserve(task):
                await self._inflight.release()
                continue
            self.counts.submitting += 1
            try:
                job_id, cost = await self._submit(task)
            except (ApiError, _Stopped, _Unsure) as err:
                await self._inflight.release()  # no job is running for this task
                self._budget.release(task.name)
                if isinstance(err, CredentialsError):
                    raise
                if isinstance(err, ApiError):
                    self._fail(task, f"submit failed: {err}", permanent=err.kind is ErrorKind.PERMANENT)
                elif isinstance(err, _Unsure):
                    # The intent stays in the journal without a job id: the next run reconciles it.
                    self._defer(task, f"{err}; rerun to finish")
                continue
            finally:
                self.counts.submitting -= 1
                self._maybe_idle()
            # time.time() is close to the server's createdAt; the first poll answer refines it.
            self._watcher.submitted(task, job_id, cost, created=time.time())
            self._update_counts()

    async def _reserve(self, task: Task) -> bool:
        """Hold the task's price against --max-cost; False (task left for later) if it won't fit."""
        if self._budget.cap is None:
            self._budget.held[task.name] = self._pricer.known(task) or 0.0
            return True
        estimate = await self._pricer.price(task)
        if self._budget.reserve(task.name, estimate):
            return True
        self.reporter.event(
            "budget",
            task.name,
            message=f"left: {estimate:g} CU would pass --max-cost {self._budget.cap:g} "
            f"(spent {self._budget.spent:g}, running {self._budget.committed:g})",
        )
        self._settle()
        return False

    async def _submit(self, task: Task) -> tuple[str, float | None]:
        """POST one task, journaling intent before and job id after; retries transient errors."""
        st = self._states[task.name]
        body = self._body(task)
        attempt = 0
        # The intent goes to disk before waiting for a rate slot, so that nothing but the
        # POST itself sits between the slot being granted and the request being sent.
        intent_at = time.time()
        await self.journal.commit("intent", task=task.name, digest=task.digest, attempt=st.attempts + 1)
        st.attempts += 1
        st.digest = task.digest
        st.status = Status.SUBMITTING
        maybe_sent = False
        limited = 0
        while True:
            await self._cooldown.wait()
            await self._throttle.acquire()
            if self._cooldown.remaining > 0:
                continue  # a 429 arrived while we waited for a slot: honour it first
            if self._stopping or self._disk_error is not None:
                if not maybe_sent:
                    self.journal.append("withdrawn", task=task.name)  # nothing was sent: no job exists
                    st.status = Status.NEW
                raise _Stopped
            try:
                sub = await self.client.generate(task.model, body)
            except ApiError as err:
                if err.kind is not ErrorKind.TRANSIENT:
                    raise
                if err.status == 429:
                    self._on_429(err)
                    limited += 1
                    if limited >= MAX_RATE_LIMITED:
                        raise  # a quota that never comes back: fail the task, not the night
                    continue
                if err.ambiguous:
                    maybe_sent = True
                    # The POST may have created (and billed) a job: look before resubmitting.
                    try:
                        found = await self._find_job(body, intent_at, st.job_ids)
                    except ApiError as lookup:
                        if isinstance(lookup, CredentialsError):
                            raise
                        raise _Unsure(f"could not check whether a submission went through ({lookup})") from None
                    if found is not None:
                        await self._record_job(task, found.id, found.cost, adopted=True)
                        self._times[task.name] = {"submitted": intent_at}
                        return found.id, found.cost
                attempt += 1
                if self.config.backoff.exhausted(attempt):
                    raise
                await asyncio.sleep(self.config.backoff.delay(attempt, err.retry_after))
                continue
            await self._record_job(task, sub.job.id, sub.cost, adopted=False)
            self._times[task.name] = {"submitted": time.time()}
            return sub.job.id, sub.cost

    async def _record_job(self, task: Task, job_id: str, cost: float | None, *, adopted: bool) -> None:
        """A task's job id, on disk before anything else happens, and in its state."""
        if adopted:
            await self.journal.commit("submitted", task=task.name, job_id=job_id, adopted=True)
            self.reporter.event("adopted", task.name, job=job_id)
        else:
            await self.journal.commit("submitted", task=task.name, job_id=job_id, cost=cost)
        self._budget.quote(task.name, cost)
        st = self._states[task.name]
        st.job_id, st.status = job_id, Status.IN_FLIGHT
        st.job_ids.append(job_id)

    def _on_429(self, err: ApiError) -> None:
        """Any 429, from any request: every submitter pauses until the server's hint."""
        if err.action_limit is not None and self._inflight.lower(err.action_limit):
            self.reporter.event(
                "limit", message=f"the API allows {err.action_limit} jobs at once; in-flight cap lowered"
            )
        wait = err.retry_after if err.retry_after is not None else self.config.backoff.delay(self._cooldown.trips + 1)
        self._cooldown.trip(wait)
        self.reporter.event("cooldown", seconds=round(wait, 2))

    async def _find_job(self, body: dict[str, object], since: float, known: list[str]) -> Job | None:
        """The job an ambiguous POST created, if it did (a wrong 'no' would pay twice)."""
        async for job in self._jobs_since(since):
            if job.id not in known and job.status not in ("failure", "canceled") and _matches(body, job.input):
                return job
        return None

    async def _jobs_since(self, since: float) -> AsyncIterator[Job]:
        """The account's jobs created after `since` (less a clock-skew margin), each page retried."""
        jobs = self.client.iter_jobs(
            created_after=iso(since - RECONCILE_MARGIN), page_size=100, retry=self._with_retries
        )
        async for job in jobs:
            if not job.input and job.status not in ("failure", "canceled"):
                # Some listings leave out metadata.input; matching needs it, so ask the job.
                job = await self._with_retries(lambda job_id=job.id: self.client.get_job(job_id))
            yield job

    async def _job_ended(self, active: Watch, job: Job | None, problem: str | None, timed_out: bool) -> None:
        """The watcher saw a job end (or gave up on it): release its slot and move the task on."""
        await self._inflight.release()
        task, st = active.task, self._states[active.task.name]
        if job is not None and job.status == "success":
            cost = self._budget.settle(task.name, job.cost if job.cost is not None else active.cost)
            self.journal.append("succeeded", task=task.name, job_id=job.id, asset_ids=list(job.asset_ids), cost=cost)
            st.status, st.asset_ids, st.cost = Status.DOWNLOADING, list(job.asset_ids), cost
            self.counts.spent += cost
            self.result.spent += cost
            self._times.setdefault(task.name, {})["succeeded"] = time.time()
            self._download_q.put_nowait((task, list(job.asset_ids)))
        elif timed_out or (job is not None and job.status == "canceled"):
            self._budget.release(task.name)
            reason = problem or "job was canceled"
            self._fail(task, reason, permanent=False)
        else:
            self._budget.release(task.name)  # refunded
            reason = problem or (job.error if job and job.error else "job failed without a reason")
            self.journal.append("job_failed", task=task.name, job_id=active.job_id, reason=reason, refunded=True)
            st.job_failures += 1
            st.status = Status.NEW
            if st.job_failures <= self.config.job_retries and not self._stopping and self._disk_error is None:
                self.reporter.event("retry", task.name, reason=reason)
                self._submit_q.put_nowait(task)  # failed jobs are refunded: try again
            else:
                self._fail(task, f"job failed {st.job_failures} time(s): {reason}", permanent=False)
        self._update_counts()
        self._maybe_idle()

    async def _download_worker(self) -> None:
        while True:
            task, asset_ids = await self._download_q.get()
            if self._disk_error is not None:
                continue  # the journal says "succeeded": the next run downloads it
            self.counts.downloading += 1
            try:
                files = await self._download(task, asset_ids)
                await self._finish(task, files)
            except DiskError as err:
                self._on_disk_error(err)
                continue
            # The job is paid for: a task whose files could not be fetched is not marked
            # failed (--retry-failed would pay again); it stays "succeeded" in the journal
            # and the next run downloads it.
            except DownloadError as err:
                self._defer(task, f"download failed: {err.reason} (paid; the next run downloads it again)")
                continue
            except ApiError as err:
                if isinstance(err, CredentialsError):
                    raise
                self._defer(task, f"asset lookup failed: {err} (paid; the next run downloads it again)")
                continue
            finally:
                self.counts.downloading -= 1
                self._maybe_idle()

    async def _download(self, task: Task, asset_ids: list[str]) -> list[FileInfo]:
        if not asset_ids:
            raise DownloadError("job succeeded without assets", retryable=False)
        files = []
        for index, asset_id in enumerate(asset_ids, start=1):
            asset = await self._assets.get(asset_id)
            stem = task.name if index == 1 else f"{task.name}-{index}"

            async def refresh(asset_id: str = asset_id) -> Asset:
                return await self._assets.get(asset_id)

            files.append(
                await download_asset(
                    self.client,
                    asset,
                    self.folder / stem,
                    refresh=refresh,
                    max_bytes=self.config.max_download_bytes,
                    backoff=self.config.backoff,
                    folder=self.folder,
                )
            )
        return files

    async def _with_retries(self, call: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await call()
            except ApiError as err:
                attempt += 1
                if err.status == 429:
                    self._on_429(err)
                if err.kind is not ErrorKind.TRANSIENT or self.config.backoff.exhausted(attempt):
                    raise
                await asyncio.sleep(self.config.backoff.delay(attempt, err.retry_after))

    async def _finish(self, task: Task, files: list[FileInfo]) -> None:
        st = self._states[task.name]
        sidecar = {
            "track": task.track,
            "take": task.take,
            "name": task.name,
            "prompt": task.params.get("prompt"),
            "params": dict(task.params),
            "point": dict(task.point),
            "seed": task.seed,
            "model": task.model,
            "digest": task.digest,
            "jobId": st.job_id,
            "assetId": files[0].asset_id,
            "assetIds": [f.asset_id for f in files],
            "file": files[0].path,
            "bytes": files[0].bytes,
            "sha256": files[0].sha256,
            "files": [f.as_dict() for f in files],
            "cost": st.cost,
            "timings": _timings(self._times.pop(task.name, {}), time.time()),
            "batchgen": __version__,
        }
        if task.input_audio:
            sidecar["inputAudio"] = {"file": task.params.get("inputAudio"), "sha256": task.audio_sha256}
        # In a thread: the sidecar's fsync should not stall every other task on a slow disk.
        await asyncio.to_thread(write_json_atomic, self.folder / f"{task.name}.json", sidecar)
        self.journal.append(
            "done", task=task.name, digest=task.digest, files=[f.as_dict() for f in files], cost=st.cost
        )
        st.status, st.done_digest, st.files = Status.DONE, task.digest, [f.as_dict() for f in files]
        self.result.done += 1
        self.counts.done += 1
        self.reporter.event("done", task.name, file=files[0].path, cost=st.cost)
        self._settle()

    def _fail(self, task: Task, reason: str, *, permanent: bool) -> None:
        st = self._states.get(task.name)
        self.journal.append(
            "failed", task=task.name, reason=reason, permanent=permanent, attempt=st.attempts if st else 0
        )
        if st is not None:
            st.status, st.reason, st.permanent = Status.FAILED, reason, permanent
        self.result.failed[task.name] = reason
        self.counts.failed += 1
        self.reporter.event("failed", task.name, reason=reason, error=True)
        self._settle()

    def _defer(self, task: Task, reason: str) -> None:
        """Leave a task as the journal has it, for the next run; it counts as not done."""
        self.result.failed[task.name] = reason
        self.counts.failed += 1
        self.reporter.event("deferred", task.name, reason=reason, error=True)
        self._settle()

    def _settle(self) -> None:
        self._remaining -= 1
        self._update_counts()
        if self._remaining <= 0:
            self._finished.set()

    def _update_counts(self) -> None:
        self.counts.queued = self._submit_q.qsize()
        self.counts.running = len(self._watcher.running)
        self.counts.committed = self._budget.committed

    async def _ticker(self) -> None:
        while True:
            self._update_counts()
            self.reporter.tick(self.counts)
            await asyncio.sleep(0.5)

    def _on_signal(self) -> None:
        if self._stopping:
            self.reporter.event("stop", message="second signal: stopping now", error=True)
            self._finished.set()
            return
        self._stopping = True
        self.reporter.event(
            "stop",
            message=f"stopping: no new submissions; finishing bookkeeping (up to {self.config.grace:.0f}s)",
            error=True,
        )
        asyncio.get_running_loop().call_later(self.config.grace, self._finished.set)
        self._maybe_idle()

    def _on_disk_error(self, err: DiskError) -> None:
        """Writing failed: submit nothing more, keep polling what is paid for, then stop."""
        if self._disk_error is None:
            self._disk_error = err
            self.reporter.event("disk", message=f"{err}; no new submissions, finishing running jobs", error=True)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        """End early when stopping and nothing that must finish is mid-way.

        On a signal, that is POSTs and downloads under way; after a disk error, also the
        jobs still running (their results are journaled for the next run to download).
        """
        quiet = self.counts.submitting == 0 and self.counts.downloading == 0
        if self._stopping and quiet and self._download_q.empty():
            self._finished.set()
        if self._disk_error is not None and quiet and not self._watcher.running:
            self._finished.set()


def _timings(marks: dict[str, float], now: float) -> dict[str, object]:
    """Sidecar timings; a task resumed from an earlier run knows only when it finished."""
    out: dict[str, object] = {"finishedAt": iso(now)}
    if "submitted" in marks:
        out["submittedAt"] = iso(marks["submitted"])
        out["totalSeconds"] = round(now - marks["submitted"], 3)
    if "succeeded" in marks:
        out["downloadSeconds"] = round(now - marks["succeeded"], 3)
        if "submitted" in marks:
            out["jobSeconds"] = round(marks["succeeded"] - marks["submitted"], 3)
    return out


class Declined(BatchgenError):
    """The user said no to the estimated spend."""


class _Stopped(Exception):
    """A submit worker saw the stop flag before sending its POST."""


class _Unsure(Exception):
    """A POST may have created a job and the job list could not say: leave it to the next run."""


def _matches(sent: dict[str, object], echoed: Any) -> bool:
    """True when a job's echoed input has every parameter we sent, with the same value.

    Extra keys the API adds (its defaults) do not matter; 8 and 8.0 are the same value.
    """
    return isinstance(echoed, dict) and all(k in echoed and echoed[k] == v for k, v in sent.items())


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that should decide the exit code, out of a TaskGroup's exception group."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            flat.append(exc)
    for kind in (CredentialsError, DiskError, BatchgenError):
        for exc in flat:
            if isinstance(exc, kind):
                return exc
    return flat[0] if flat else group


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, handler: Any) -> Any:
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests) or not supported: default handling
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


__all__ = ["Declined", "RunConfig", "RunResult", "Runner"]

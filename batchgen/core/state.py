"""Task state as the journal tells it: one function that applies each event, and replay.

Pure: events in, states out, no I/O. `apply` is the only code that changes a
`TaskState`, and the ledger calls it for live events exactly as `replay` does for the
journal's lines, so a run and a later replay can never tell different stories.

An event's fields were checked when it was built (`events`): a line with a missing,
mistyped or out-of-range field is skipped whole (with a warning naming its line), and a
later bad line can never undo what earlier lines established. Events are idempotent:
applying one twice, or replaying a journal whose lines were duplicated,
gives the same state (a job-level event only moves the job it names).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from . import text
from .errors import JournalError
from .events import (
    BadEvent,
    BatchStarted,
    Deferred,
    Done,
    Event,
    Failed,
    HopDone,
    HopEvent,
    HopUnusable,
    Intent,
    JobFailed,
    Kept,
    Progress,
    Submitted,
    Succeeded,
    TaskEvent,
    Uploaded,
    Withdrawn,
    decode,
)
from .gcpause import paused_gc

VERSION = 2  # the newest journal this batchgen reads
# A journal of plain events says version 1, which 0.1.0 and 0.2.0 read too. A compacted one
# holds `kept` lines, which they do not know: its header says version 2, so they refuse it
# rather than read a batch with no tasks in it and pay for all of them again.
PLAIN, COMPACTED = 1, 2

MAX_HOPS_HELD = 2_000_000  # hop states in one journal: twice what the largest manifest can make


class Status(StrEnum):
    """Where a task (or one hop of a chained task) stands."""

    NEW = "new"  # nothing running (never submitted, withdrawn, or a refunded failure awaiting its retry)
    SUBMITTING = "submitting"  # intent written, no job id yet: the crash window
    IN_FLIGHT = "in-flight"  # a job is running (or a chain is between two hops)
    DOWNLOADING = "downloading"  # every job succeeded; files not all on disk yet
    DONE = "done"
    FAILED = "failed"


class PlanStatus(StrEnum):
    """What a run would do with a task: the one vocabulary of `plan`, `status`, the page and `serve`."""

    NEW = "new"  # never made (or a refunded failure awaiting its retry): submitted
    CHANGED = "changed"  # its manifest entry changed since it was made: made again
    MISSING = "missing"  # made, but its file is gone or cut short: fetched again at no charge
    FAILED = "failed"  # failed in an earlier run: left, unless --retry-failed
    IN_FLIGHT = "in-flight"  # a job is running, or a chain is between two hops
    DONE = "done"  # made, its files on disk as recorded


@dataclass(slots=True)
class HopState:
    """One job-sized step of a task: a plain task has one, a chained track one per hop."""

    status: Status = Status.NEW
    job_id: str | None = None
    asset_ids: tuple[str, ...] = ()
    failures: int = 0  # job failures of this hop since the task (or its retry) started afresh
    redos: int = 0  # times this hop's output landed unusable and was made again (each one paid)
    cost: float | None = None  # creative units quoted or charged for its current job
    detail: dict[str, Any] | None = None  # the API's discount and cost breakdown, when it gave them
    file: dict[str, Any] | None = None  # a chain hop's downloaded output


@dataclass(slots=True)
class TaskState:
    """One task, as far as the journal has told."""

    digest: str | None = None  # digest of the current attempt
    hops: list[HopState] = field(default_factory=lambda: [HopState()])
    outcome: Status | None = None  # DONE or FAILED once the task ended
    attempts: int = 0  # intents written, all hops together
    intent_at: float | None = None  # wall time of the last intent
    job_ids: list[str] = field(default_factory=list)  # every job ever submitted for it
    charges: dict[str, float] = field(default_factory=dict)  # creative units charged, per job
    kept: float = 0.0  # of `charges`, what jobs that failed without a refund kept
    reason: str | None = None
    deferred: str | None = None  # why the last run left it for the next one, until the next step
    permanent: bool = False
    done_digest: str | None = None  # digest of the files on disk
    files: list[dict[str, Any]] = field(default_factory=list)
    sidecar: dict[str, Any] | None = None  # the sidecar as written (path, bytes, sha256)
    updated: float | None = None

    @property
    def hop(self) -> int:
        """Index (0-based) of the hop in progress: the first one not yet succeeded."""
        for index, hop in enumerate(self.hops):
            if hop.status not in (Status.DOWNLOADING, Status.DONE):
                return index
        return len(self.hops) - 1

    @property
    def current(self) -> HopState:
        return self.hops[self.hop]

    @property
    def succeeded(self) -> bool:
        """Every hop's job succeeded (files may still be downloading)."""
        return all(h.status in (Status.DOWNLOADING, Status.DONE) for h in self.hops)

    @property
    def status(self) -> Status:
        if self.outcome is not None:
            return self.outcome
        if self.succeeded:
            return Status.DOWNLOADING
        index = self.hop
        now = self.hops[index].status
        if now is Status.NEW and index > 0:
            return Status.IN_FLIGHT  # a chain between two hops
        return now

    @property
    def job_id(self) -> str | None:
        """The job of the hop in progress (or of the last hop once all succeeded)."""
        return self.current.job_id

    @property
    def spent(self) -> float:
        return sum(self.charges.values())

    @property
    def committed(self) -> float:
        """Creative units quoted for a job still running."""
        hop = self.current
        return hop.cost or 0.0 if hop.status is Status.IN_FLIGHT and self.outcome is None else 0.0

    @property
    def pending_job(self) -> bool:
        return self.status in (Status.SUBMITTING, Status.IN_FLIGHT, Status.DOWNLOADING)


@dataclass(slots=True)
class Book:
    """Everything a journal says: its header, every task's state, uploads, and figures."""

    batch: str | None = None
    base_seed: int | None = None
    tasks: dict[str, TaskState] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)  # audio sha256 -> asset id
    owners: dict[str, str] = field(default_factory=dict)  # job id -> the task it was first submitted for
    warnings: list[str] = field(default_factory=list)
    lines: int = 0  # journal lines read (the next event's sequence number)

    charged: float = 0.0  # kept by `_charge` as jobs are charged: what `spent` adds up
    kept: float = 0.0  # of `charged`, what jobs that failed without a refund kept
    hops_held: int = 0  # hop states allocated for chains: bounded, so a small journal cannot ask for millions
    running: set[str] = field(default_factory=set)  # tasks with a job running: kept by `apply`, for money in flight

    @property
    def spent(self) -> float:
        """Creative units charged for every job the journal knows, across all runs."""
        return self.charged

    def counts(self) -> Counter[str]:
        return Counter(st.status.value for st in self.tasks.values())


def apply(book: Book, event: Event, t: float | None = None) -> None:
    """Apply one event (recorded at wall time `t`) to the book.

    Raises `BadEvent`, and changes nothing, when the event does not fit the state it
    meets (a hop beyond the task's); `admit` asks the same question without applying.
    """
    handler = _HANDLERS[type(event)]
    if not isinstance(event, TaskEvent):
        handler(book, None, event, t)
        return
    st = book.tasks.get(event.task)
    if st is None:
        st = TaskState()
        handler(book, st, event, t)  # raises before the task is added if the event does not fit
        book.tasks[event.task] = st
    else:
        handler(book, st, event, t)
    if not isinstance(event, (Deferred, Progress, Kept)):
        st.deferred = None  # the task moved on: what left it waiting is over
    hops = st.hops
    if st.outcome is None and (hops[0] if len(hops) == 1 else st.current).status is Status.IN_FLIGHT:
        book.running.add(event.task)
    else:
        book.running.discard(event.task)


def admit(book: Book, event: Event) -> None:
    """Raise `BadEvent` if `event` would not fit the book's state: checked before it is written."""
    if isinstance(event, HopEvent) and not isinstance(event, Intent):
        st = book.tasks.get(event.task)
        _hop(st or TaskState(), event)


def replay(lines: Iterable[bytes | str], source: str = "journal") -> Book:
    """Fold journal lines into a `Book`, skipping bad lines with a warning naming each.

    A line repeated word for word is applied once: every event carries its sequence
    number (`n`), so an exact copy can only be a duplication. Only a header from a newer
    version of batchgen stops the replay (`JournalError`).
    """
    with paused_gc():
        book = Book()
        seen: set[int] = set()
        for number, raw, doc in _decode(lines):
            book.lines = number
            if doc is _BLANK:
                continue
            key = hash(raw)
            if key in seen:
                continue
            seen.add(key)
            if not isinstance(doc, dict):
                book.warnings.append(f"{source}:{number}: unreadable line skipped")
                continue
            try:
                line = decode(doc)
                apply(book, line.event, line.t)
            except BadEvent as bad:
                book.warnings.append(f"{source}:{number}: {bad}; line skipped")
            except _Newer as newer:
                raise JournalError(f"{source}:{number}: {newer}") from None
        return book


def plan_status(digest: str, st: TaskState | None) -> PlanStatus:
    """What `plan` and `status` show for a task, from its state (`missing` needs the folder too).

    A task whose manifest entry changed since its file (or its failure, or its job in
    flight) is `changed`: the run generates it again.
    """
    if st is None:
        return PlanStatus.NEW
    if st.outcome is Status.DONE:
        return PlanStatus.DONE if st.done_digest == digest else PlanStatus.CHANGED
    if st.digest is not None and st.digest != digest:
        return PlanStatus.CHANGED
    if st.pending_job:
        return PlanStatus.IN_FLIGHT
    if st.outcome is Status.FAILED:
        return PlanStatus.FAILED
    return PlanStatus.NEW


_BLANK: Any = object()


def _decode(lines: Iterable[bytes | str]) -> Iterator[tuple[int, bytes | str, Any]]:
    """(line number, raw line, decoded value) triples; None for a line that is not JSON.

    A journal of 400,000 lines decodes several times faster as one JSON array than
    line by line; any damage (bad JSON, bad UTF-8, absurd nesting) sends it down the
    line-by-line path, which finds the line.
    """
    raw = [line.strip() for line in lines]
    if all(raw):
        try:
            joined = b",".join(x if isinstance(x, bytes) else x.encode() for x in raw)
            values = text.loads(b"[" + joined + b"]")
            if len(values) == len(raw):
                yield from ((n, line, ev) for n, (line, ev) in enumerate(zip(raw, values, strict=True), start=1))
                return
        except (ValueError, RecursionError):
            pass
    for number, line in enumerate(raw, start=1):
        yield number, line, _one(line)


def _one(line: bytes | str) -> Any:
    if not line:
        return _BLANK
    try:
        return text.loads(line)
    except (ValueError, RecursionError):
        return None


class _Newer(Exception):
    pass


def _hop(st: TaskState, event: HopEvent) -> HopState:
    """The state of the hop an event is about."""
    if event.hop > len(st.hops):
        raise BadEvent(f"hop {event.hop} is beyond the task's {len(st.hops)}")
    return st.hops[event.hop - 1]


def _detail(event: Submitted | Succeeded) -> dict[str, Any] | None:
    """Discount and cost breakdown as a hop keeps them."""
    out: dict[str, Any] = {}
    if event.discount is not None:
        out["discount"] = event.discount
    if event.cost_details is not None:
        out["costDetails"] = dict(event.cost_details)
    return out or None


def _charge(book: Book, st: TaskState, job_id: str, amount: float) -> None:
    """What one job cost: set once per job (a repeated event changes nothing), totalled in the book."""
    book.charged += amount - st.charges.get(job_id, 0.0)
    st.charges[job_id] = amount


def _touch(st: TaskState, t: float | None) -> None:
    if t is not None:
        st.updated = t


# Handlers: everything an event carries was checked when it was built; what is left to
# check is whether it fits the state it meets.


def _on_batch(book: Book, _: TaskState | None, ev: BatchStarted, t: float | None) -> None:
    if ev.v > VERSION:
        raise _Newer(f"journal version {ev.v} is newer than this batchgen (reads {VERSION})")
    if ev.batch is not None:
        book.batch = ev.batch
    if ev.base_seed is not None:
        book.base_seed = ev.base_seed


def _on_upload(book: Book, _: TaskState | None, ev: Uploaded, t: float | None) -> None:
    book.uploads[ev.sha256] = ev.asset_id


def _on_intent(book: Book, st: TaskState, ev: Intent, t: float | None) -> None:
    attempt = ev.attempt if ev.attempt is not None else st.attempts + 1
    if attempt <= st.attempts:
        return  # an intent already applied
    if ev.digest != st.digest or st.outcome is Status.DONE or len(st.hops) != ev.hops:
        held = book.hops_held + ev.hops - len(st.hops)
        if held > MAX_HOPS_HELD:
            raise BadEvent(f"more hops than a batch can have ({MAX_HOPS_HELD:,})")
        book.hops_held = held
        st.hops = [HopState() for _ in range(ev.hops)]  # a new (or regenerated) task starts afresh
    elif st.outcome is Status.FAILED:
        st.hops[ev.hop - 1].failures = 0  # --retry-failed: this hop gets its retries again
    hop = st.hops[ev.hop - 1]
    hop.status, hop.job_id, hop.asset_ids, hop.cost, hop.detail, hop.file = (
        Status.SUBMITTING,
        None,
        (),
        None,
        None,
        None,
    )
    st.outcome, st.digest, st.attempts, st.reason, st.permanent = None, ev.digest, attempt, None, False
    st.intent_at = st.updated = t if t is not None else st.updated


def _on_submitted(book: Book, st: TaskState, ev: Submitted, t: float | None) -> None:
    hop = _hop(st, ev)
    if book.owners.setdefault(ev.job_id, ev.task) != ev.task:
        return  # another task's job: one job is never two tasks' (a server that repeats ids)
    seen = ev.job_id in st.job_ids
    if not seen:
        st.job_ids.append(ev.job_id)
    if hop.status is Status.SUBMITTING and st.outcome is None and not seen:  # a known job never answers a new intent
        hop.status, hop.job_id, hop.cost, hop.detail = Status.IN_FLIGHT, ev.job_id, ev.cost, _detail(ev)
        _touch(st, t)
    elif hop.job_id == ev.job_id and ev.cost is not None:
        hop.cost = ev.cost


def _on_withdrawn(book: Book, st: TaskState, ev: Withdrawn, t: float | None) -> None:
    hop = _hop(st, ev)
    if hop.status is Status.SUBMITTING:
        hop.status = Status.NEW
        _touch(st, t)


def _on_succeeded(book: Book, st: TaskState, ev: Succeeded, t: float | None) -> None:
    hop = _hop(st, ev)
    if hop.job_id != ev.job_id or hop.status is not Status.IN_FLIGHT:
        return  # about another job, or already applied
    hop.status, hop.asset_ids = Status.DOWNLOADING, ev.asset_ids
    if ev.cost is not None:
        hop.cost = ev.cost
    if detail := _detail(ev):
        hop.detail = {**(hop.detail or {}), **detail}
    _charge(book, st, ev.job_id, hop.cost or 0.0)
    _touch(st, t)


def _on_job_failed(book: Book, st: TaskState, ev: JobFailed, t: float | None) -> None:
    hop = _hop(st, ev)
    if not ev.refunded:
        more = (ev.cost or 0.0) - st.charges.get(ev.job_id, 0.0)  # once per job, however often it is told
        book.kept += more
        st.kept += more
        _charge(book, st, ev.job_id, ev.cost or 0.0)  # the API kept the charge (billing.disableRefund)
    if hop.job_id != ev.job_id or hop.status is not Status.IN_FLIGHT:
        return
    hop.status, hop.job_id, hop.cost = Status.NEW, None, None
    hop.failures += 1
    st.reason = ev.reason
    _touch(st, t)


def _on_hop_done(book: Book, st: TaskState, ev: HopDone, t: float | None) -> None:
    hop = _hop(st, ev)
    if hop.status is Status.DOWNLOADING:
        hop.status, hop.file = Status.DONE, dict(ev.file)
        _touch(st, t)


def _on_hop_unusable(book: Book, st: TaskState, ev: HopUnusable, t: float | None) -> None:
    hop = _hop(st, ev)
    if hop.job_id != ev.job_id or hop.status is not Status.DOWNLOADING:
        return  # about another job, or already applied
    hop.status, hop.job_id, hop.asset_ids, hop.cost, hop.detail, hop.file = Status.NEW, None, (), None, None, None
    hop.redos += 1
    st.reason = ev.reason
    _touch(st, t)


def _on_done(book: Book, st: TaskState, ev: Done, t: float | None) -> None:
    if st.outcome is not None or not st.succeeded:
        return  # already done, or about jobs this task no longer waits for
    if ev.job_id is not None and st.hops[-1].job_id != ev.job_id:
        return
    for hop in st.hops:
        hop.status = Status.DONE
    st.outcome, st.reason = Status.DONE, None
    st.done_digest = st.digest = ev.digest or st.digest
    st.files = [dict(f) for f in ev.files]
    st.sidecar = dict(ev.sidecar) if ev.sidecar is not None else None
    _touch(st, t)


def _on_failed(book: Book, st: TaskState, ev: Failed, t: float | None) -> None:
    attempt = ev.attempt if ev.attempt is not None else st.attempts
    if attempt != st.attempts or st.outcome is not None:
        return  # about an earlier attempt, or already settled
    hop = st.current
    if hop.status in (Status.SUBMITTING, Status.IN_FLIGHT):
        hop.status, hop.job_id, hop.cost = Status.NEW, None, None
    st.outcome, st.reason, st.permanent = Status.FAILED, ev.reason, ev.permanent
    _touch(st, t)


def _on_deferred(book: Book, st: TaskState, ev: Deferred, t: float | None) -> None:
    st.deferred = ev.reason
    _touch(st, t)


def _on_status(book: Book, st: TaskState, ev: Progress, t: float | None) -> None:
    """Informational (a running job's progress): nothing changes."""


def _on_kept(book: Book, st: TaskState, ev: Kept, t: float | None) -> None:
    """The task's whole state, as a compaction kept it: every field set at once."""
    new = _state_of(ev.state)
    for job in new.job_ids:
        if book.owners.get(job, ev.task) != ev.task:
            raise BadEvent(f"job {job} belongs to task {book.owners[job]!r}")
    held = book.hops_held + len(new.hops) - len(st.hops)
    if held > MAX_HOPS_HELD:
        raise BadEvent(f"more hops than a batch can have ({MAX_HOPS_HELD:,})")
    book.hops_held = held
    for job in new.job_ids:
        book.owners[job] = ev.task
    book.charged += sum(new.charges.values()) - sum(st.charges.values())
    book.kept += new.kept - st.kept
    for name in _TASK_FIELDS:
        setattr(st, name, getattr(new, name))


_TASK_FIELDS = tuple(f.name for f in fields(TaskState))
_HOP_FIELDS = tuple(f.name for f in fields(HopState))
_EMPTY_TASK, _EMPTY_HOP = TaskState(hops=[]), HopState()


def state_doc(st: TaskState) -> dict[str, Any]:
    """A task's whole state as a `Kept` event carries it: its fields, defaults left out."""
    doc = {name: value for name in _TASK_FIELDS if (value := getattr(st, name)) != getattr(_EMPTY_TASK, name)}
    if st.outcome is not None:
        doc["outcome"] = st.outcome.value
    doc["hops"] = [_hop_doc(hop) for hop in st.hops]
    return doc


def _hop_doc(hop: HopState) -> dict[str, Any]:
    doc = {name: value for name in _HOP_FIELDS if (value := getattr(hop, name)) != getattr(_EMPTY_HOP, name)}
    doc["status"] = hop.status.value
    if hop.asset_ids:
        doc["asset_ids"] = list(hop.asset_ids)
    return doc


def _state_of(doc: Mapping[str, Any]) -> TaskState:
    """The `TaskState` a checked `Kept` record describes (`state_doc`'s inverse)."""
    fields_ = dict(doc)
    fields_["hops"] = [_hop_of(hop) for hop in doc["hops"]]
    if (outcome := doc.get("outcome")) is not None:
        fields_["outcome"] = _STATUS[outcome]
    for name, copy in _COPIED.items():  # the state owns its containers, never the event's
        if name in fields_:
            fields_[name] = copy(fields_[name])
    return TaskState(**fields_)


def _hop_of(doc: Mapping[str, Any]) -> HopState:
    hop = HopState(**doc)
    hop.status = _STATUS[doc["status"]]
    if hop.asset_ids:
        hop.asset_ids = tuple(hop.asset_ids)
    for name in ("detail", "file"):
        if (value := doc.get(name)) is not None:
            setattr(hop, name, dict(value))
    return hop


_STATUS = {status.value: status for status in Status}
_COPIED: dict[str, Callable[[Any], Any]] = {
    "job_ids": list,
    "charges": dict,
    "files": lambda files: [dict(f) for f in files],
    "sidecar": lambda sidecar: dict(sidecar) if sidecar is not None else None,
}


def kept_events(book: Book) -> Iterator[Event]:
    """The events that tell `book`'s story in the fewest lines: its header, its uploads, one
    `Kept` per task. Replayed, they make the same book (`same_story`), its warnings aside."""
    yield BatchStarted(v=COMPACTED, batch=book.batch, base_seed=book.base_seed)
    for sha256, asset_id in book.uploads.items():
        yield Uploaded(sha256=sha256, asset_id=asset_id)
    for name, st in book.tasks.items():
        yield Kept(task=name, state=state_doc(st))


def same_story(a: Book, b: Book) -> bool:
    """Whether two books say the same about every task, upload, job and credit."""
    return (
        (a.batch, a.base_seed, a.uploads, a.owners, a.running, a.hops_held)
        == (b.batch, b.base_seed, b.uploads, b.owners, b.running, b.hops_held)
        and a.tasks.keys() == b.tasks.keys()
        and all(state_doc(st) == state_doc(b.tasks[name]) for name, st in a.tasks.items())
        and math.isclose(a.charged, b.charged, rel_tol=1e-9, abs_tol=1e-9)
        and math.isclose(a.kept, b.kept, rel_tol=1e-9, abs_tol=1e-9)
    )


_HANDLERS: dict[type[Event], Callable[[Book, Any, Any, float | None], None]] = {
    BatchStarted: _on_batch,
    Uploaded: _on_upload,
    Intent: _on_intent,
    Submitted: _on_submitted,
    Withdrawn: _on_withdrawn,
    Succeeded: _on_succeeded,
    JobFailed: _on_job_failed,
    HopDone: _on_hop_done,
    HopUnusable: _on_hop_unusable,
    Done: _on_done,
    Failed: _on_failed,
    Deferred: _on_deferred,
    Progress: _on_status,
    Kept: _on_kept,
}

"""Task state as the journal tells it: the events, one function that applies each, replay.

Pure: events in, states out, no I/O. `apply` is the only code that changes a
`TaskState`, and the ledger calls it for live events exactly as `replay` does for the
journal's lines, so a run and a later replay can never tell different stories.

Every field an event carries is checked before anything changes: a line with a
missing, mistyped or out-of-range field is skipped whole (with a warning naming its
line), and a later bad line can never undo what earlier lines established. Events are
idempotent: applying one twice, or replaying a journal whose lines were duplicated,
gives the same state (a job-level event only moves the job it names).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import text
from .errors import JournalError
from .gcpause import paused_gc
from .task import MAX_HOPS, is_safe_id, is_safe_name

VERSION = 1
STATE_DIR = ".batchgen"
JOURNAL = "state.jsonl"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATH_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}|\.batchgen")
MAX_TEXT = 2000  # longest reason or path kept from a journal line
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

    @property
    def spent(self) -> float:
        """Creative units charged for every job the journal knows, across all runs."""
        return self.charged

    def counts(self) -> Counter[str]:
        return Counter(st.status.value for st in self.tasks.values())


class BadEvent(ValueError):
    """An event whose fields do not hold up; the line is skipped."""


def apply(book: Book, ev: dict[str, Any]) -> None:
    """Apply one event to the book. Raises `BadEvent` (and changes nothing) when it is malformed."""
    kind = ev.get("ev")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise BadEvent(f"unknown event {str(kind)[:40]!r}")
    if kind in _BOOK_EVENTS:
        handler(book, None, ev)
        return
    name = ev.get("task")
    st = book.tasks.get(name) if type(name) is str else None  # a known name was checked when first seen
    if st is None:
        if type(name) is not str or not is_safe_name(name):
            raise BadEvent("event without a valid task name")
        st = TaskState()
        handler(book, st, ev)  # raises before the task is added if the event is bad
        book.tasks[name] = st
    else:
        handler(book, st, ev)
    if kind not in ("deferred", "status"):
        st.deferred = None  # the task moved on: what left it waiting is over


def replay(lines: Iterable[bytes | str], source: str = "journal") -> Book:
    """Fold journal lines into a `Book`, skipping bad lines with a warning naming each.

    A line repeated word for word is applied once: every event carries its sequence
    number (`n`), so an exact copy can only be a duplication. Only a header from a newer
    version of batchgen stops the replay (`JournalError`).
    """
    with paused_gc():
        book = Book()
        seen: set[int] = set()
        for number, raw, ev in _decode(lines):
            book.lines = number
            if ev is _BLANK:
                continue
            key = hash(raw)
            if key in seen:
                continue
            seen.add(key)
            if not isinstance(ev, dict):
                book.warnings.append(f"{source}:{number}: unreadable line skipped")
                continue
            try:
                apply(book, ev)
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


# Field checks: each returns the value (normalised) or raises BadEvent naming the field.


def _text(ev: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = ev.get(key)
    if value is None and not required:
        return None
    if type(value) is not str:
        raise BadEvent(f"{key} missing or not text")
    return value[:MAX_TEXT]


def _ident(ev: dict[str, Any], key: str) -> str:
    value = ev.get(key)
    if type(value) is not str or not is_safe_id(value):
        raise BadEvent(f"{key} missing or not a valid id")
    return value


def _idents(ev: dict[str, Any], key: str) -> tuple[str, ...]:
    value = ev.get(key)
    if type(value) is not list or len(value) > 1000:
        raise BadEvent(f"{key} missing or not a list of ids")
    for item in value:
        if type(item) is not str or not is_safe_id(item):
            raise BadEvent(f"{key} holds an invalid id")
    return tuple(value)


def _number(ev: dict[str, Any], key: str) -> float | None:
    value = ev.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise BadEvent(f"{key} is not a non-negative number")
    return float(value)


def _whole(ev: dict[str, Any], key: str, default: int | None = None, least: int = 0) -> int:
    value = ev.get(key, default)
    if type(value) is not int or value < least or value > 10**9:
        raise BadEvent(f"{key} missing or not a whole number of at least {least}")
    return value


def _flag(ev: dict[str, Any], key: str, default: bool) -> bool:
    value = ev.get(key, default)
    if type(value) is not bool:
        raise BadEvent(f"{key} is not true or false")
    return value


def _file(value: Any, key: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise BadEvent(f"{key} is not a file record")
    path = value.get("path")
    if type(path) is not str or len(path) > MAX_TEXT or not all(_PATH_PART.fullmatch(p) for p in path.split("/")):
        raise BadEvent(f"{key} has no valid path inside the batch folder")
    size, sha = value.get("bytes"), value.get("sha256")
    if type(size) is not int or size < 0:
        raise BadEvent(f"{key} has no valid byte count")
    if type(sha) is not str or len(sha) > 128:
        raise BadEvent(f"{key} has no valid sha256")
    return value


def _files(ev: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = ev.get(key)
    if type(value) is not list or not value or len(value) > 100:
        raise BadEvent(f"{key} missing or not a list of files")
    return [_file(item, key) for item in value]


def _detail(ev: dict[str, Any]) -> dict[str, Any] | None:
    """Discount and cost breakdown: numbers only, a few dozen at most."""
    out: dict[str, Any] = {}
    if (discount := _number(ev, "discount")) is not None:
        out["discount"] = discount
    details = ev.get("cost_details")
    if details is not None:
        if type(details) is not dict or len(details) > 40:
            raise BadEvent("cost_details is not a small mapping")
        for value in details.values():
            if type(value) not in (int, float) or not math.isfinite(value):
                raise BadEvent("cost_details holds a value that is not a number")
        out["costDetails"] = {str(k)[:60]: float(v) for k, v in details.items()}
    return out or None


def _hop(st: TaskState, ev: dict[str, Any]) -> tuple[int, HopState]:
    """The hop an event is about (1-based `hop`, 1 when absent) and its state."""
    index = _whole(ev, "hop", 1, least=1) - 1
    if index >= len(st.hops):
        raise BadEvent(f"hop {index + 1} is beyond the task's {len(st.hops)}")
    return index, st.hops[index]


def _charge(book: Book, st: TaskState, job_id: str, amount: float) -> None:
    """What one job cost: set once per job (a repeated event changes nothing), totalled in the book."""
    book.charged += amount - st.charges.get(job_id, 0.0)
    st.charges[job_id] = amount


def _touch(st: TaskState, ev: dict[str, Any]) -> None:
    t: Any = ev.get("t")
    if type(t) in (int, float) and math.isfinite(t):  # `type`, not isinstance: True is no time
        st.updated = float(t)


# Handlers: validate everything first, then change the state.


def _on_batch(book: Book, _: TaskState | None, ev: dict[str, Any]) -> None:
    version = ev.get("v")
    if type(version) is not int or version < 1:
        raise BadEvent("batch header without a valid version")
    if version > VERSION:
        raise _Newer(f"journal version {version} is newer than this batchgen (reads {VERSION})")
    batch = _text(ev, "batch")
    seed = ev.get("base_seed")
    if seed is not None and (type(seed) is not int or not 0 <= seed < 2**32):
        raise BadEvent("base_seed is not a seed")
    if batch is not None and not is_safe_name(batch):
        raise BadEvent("batch is not a valid batch name")
    if batch is not None:
        book.batch = batch
    if seed is not None:
        book.base_seed = seed


def _on_upload(book: Book, _: TaskState | None, ev: dict[str, Any]) -> None:
    sha = ev.get("sha256")
    if type(sha) is not str or not _HEX64.fullmatch(sha):
        raise BadEvent("upload without a valid sha256")
    book.uploads[sha] = _ident(ev, "asset_id")


def _on_intent(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    digest = _text(ev, "digest", required=True)
    attempt = _whole(ev, "attempt", st.attempts + 1, least=1)
    hops = _whole(ev, "hops", 1, least=1)
    index = _whole(ev, "hop", 1, least=1) - 1
    if hops > MAX_HOPS or index >= hops:
        raise BadEvent("hop is beyond hops")
    if attempt <= st.attempts:
        return  # an intent already applied
    if digest != st.digest or st.outcome is Status.DONE or len(st.hops) != hops:
        held = book.hops_held + hops - len(st.hops)
        if held > MAX_HOPS_HELD:
            raise BadEvent(f"more hops than a batch can have ({MAX_HOPS_HELD:,})")
        book.hops_held = held
        st.hops = [HopState() for _ in range(hops)]  # a new (or regenerated) task starts afresh
    elif st.outcome is Status.FAILED:
        st.hops[index].failures = 0  # --retry-failed: this hop gets its retries again
    hop = st.hops[index]
    hop.status, hop.job_id, hop.asset_ids, hop.cost, hop.detail, hop.file = (
        Status.SUBMITTING,
        None,
        (),
        None,
        None,
        None,
    )
    st.outcome, st.digest, st.attempts, st.reason, st.permanent = None, digest, attempt, None, False
    st.intent_at = st.updated = float(ev["t"]) if type(ev.get("t")) in (int, float) else st.updated


def _on_submitted(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    job_id = _ident(ev, "job_id")
    cost = _number(ev, "cost")
    _flag(ev, "adopted", False)
    detail = _detail(ev)
    _, hop = _hop(st, ev)
    if book.owners.setdefault(job_id, ev["task"]) != ev["task"]:
        return  # another task's job: one job is never two tasks' (a server that repeats ids)
    seen = job_id in st.job_ids
    if not seen:
        st.job_ids.append(job_id)
    if hop.status is Status.SUBMITTING and st.outcome is None and not seen:  # a known job never answers a new intent
        hop.status, hop.job_id, hop.cost, hop.detail = Status.IN_FLIGHT, job_id, cost, detail
        _touch(st, ev)
    elif hop.job_id == job_id and cost is not None:
        hop.cost = cost


def _on_withdrawn(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    _, hop = _hop(st, ev)
    if hop.status is Status.SUBMITTING:
        hop.status = Status.NEW
        _touch(st, ev)


def _on_succeeded(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    job_id = _ident(ev, "job_id")
    assets = _idents(ev, "asset_ids")
    cost = _number(ev, "cost")
    detail = _detail(ev)
    _, hop = _hop(st, ev)
    if hop.job_id != job_id or hop.status is not Status.IN_FLIGHT:
        return  # about another job, or already applied
    hop.status, hop.asset_ids = Status.DOWNLOADING, assets
    if cost is not None:
        hop.cost = cost
    if detail:
        hop.detail = {**(hop.detail or {}), **detail}
    _charge(book, st, job_id, hop.cost or 0.0)
    _touch(st, ev)


def _on_job_failed(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    job_id = _ident(ev, "job_id")
    reason = _text(ev, "reason")
    refunded = _flag(ev, "refunded", True)
    cost = _number(ev, "cost")
    _, hop = _hop(st, ev)
    if not refunded:
        book.kept += (cost or 0.0) - st.charges.get(job_id, 0.0)  # once per job, however often it is told
        _charge(book, st, job_id, cost or 0.0)  # the API kept the charge (billing.disableRefund)
    if hop.job_id != job_id or hop.status is not Status.IN_FLIGHT:
        return
    hop.status, hop.job_id, hop.cost = Status.NEW, None, None
    hop.failures += 1
    st.reason = reason
    _touch(st, ev)


def _on_hop_done(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    record = _file(ev.get("file"), "file")
    _, hop = _hop(st, ev)
    if hop.status is Status.DOWNLOADING:
        hop.status, hop.file = Status.DONE, record
        _touch(st, ev)


def _on_hop_unusable(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    """A chain hop landed and cannot be used: paid for, and to be made again (or the task fails)."""
    assert st is not None
    job_id = _ident(ev, "job_id")
    reason = _text(ev, "reason")
    _, hop = _hop(st, ev)
    if hop.job_id != job_id or hop.status is not Status.DOWNLOADING:
        return  # about another job, or already applied
    hop.status, hop.job_id, hop.asset_ids, hop.cost, hop.detail, hop.file = Status.NEW, None, (), None, None, None
    hop.redos += 1
    st.reason = reason
    _touch(st, ev)


def _on_done(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    digest = _text(ev, "digest")
    files = _files(ev, "files")
    sidecar = _file(ev["sidecar"], "sidecar") if ev.get("sidecar") is not None else None
    _number(ev, "cost")
    job_id = ev.get("job_id")
    if job_id is not None and not is_safe_id(job_id):
        raise BadEvent("job_id is not a valid id")
    if st.outcome is not None or not st.succeeded:
        return  # already done, or about jobs this task no longer waits for
    if job_id is not None and st.hops[-1].job_id != job_id:
        return
    for hop in st.hops:
        hop.status = Status.DONE
    st.outcome, st.reason = Status.DONE, None
    st.done_digest = st.digest = digest or st.digest
    st.files, st.sidecar = files, sidecar
    _touch(st, ev)


def _on_failed(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    assert st is not None
    reason = _text(ev, "reason") or "failed"
    permanent = _flag(ev, "permanent", False)
    attempt = _whole(ev, "attempt", st.attempts)
    if attempt != st.attempts or st.outcome is not None:
        return  # about an earlier attempt, or already settled
    hop = st.current
    if hop.status in (Status.SUBMITTING, Status.IN_FLIGHT):
        hop.status, hop.job_id, hop.cost = Status.NEW, None, None
    st.outcome, st.reason, st.permanent = Status.FAILED, reason, permanent
    _touch(st, ev)


def _on_deferred(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    """The run left the task as it is, for the next run (a lost answer, a failed download)."""
    assert st is not None
    st.deferred = _text(ev, "reason") or "left for the next run"
    _touch(st, ev)


def _on_status(book: Book, st: TaskState | None, ev: dict[str, Any]) -> None:
    """Informational (a running job's progress): nothing changes."""


_HANDLERS: dict[str, Callable[[Book, TaskState | None, dict[str, Any]], None]] = {
    "batch": _on_batch,
    "upload": _on_upload,
    "intent": _on_intent,
    "submitted": _on_submitted,
    "withdrawn": _on_withdrawn,
    "succeeded": _on_succeeded,
    "job_failed": _on_job_failed,
    "hop_done": _on_hop_done,
    "hop_unusable": _on_hop_unusable,
    "done": _on_done,
    "failed": _on_failed,
    "deferred": _on_deferred,
    "status": _on_status,
}
_BOOK_EVENTS = frozenset({"batch", "upload"})
EVENTS = frozenset(_HANDLERS)

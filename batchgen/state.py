"""The journal: an append-only JSON Lines record of every step, and its replay.

`replay` is pure (lines in, task states out) so resume logic is testable without a
server. `Journal` is the only writer; appends are synchronous write + flush, with an
fsync for the events that stand for money (the intent to submit and the job id), so
they survive a crash or a cancelled coroutine.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import DiskError, JournalError
from .gcpause import paused_gc

VERSION = 1
STATE_DIR = ".batchgen"
JOURNAL = "state.jsonl"


class Status(StrEnum):
    """Where a task stands, as replayed from the journal."""

    NEW = "new"  # nothing submitted (or a refunded failure waiting for its retry)
    SUBMITTING = "submitting"  # intent written, no job id yet: the crash window
    IN_FLIGHT = "in-flight"  # job id known, job not terminal
    DOWNLOADING = "downloading"  # job succeeded, assets known, files not all on disk
    DONE = "done"
    FAILED = "failed"


@dataclass(slots=True)
class TaskState:
    """One task's replayed state."""

    status: Status = Status.NEW
    digest: str | None = None  # digest of the current attempt
    job_id: str | None = None
    job_ids: list[str] = field(default_factory=list)  # every job ever submitted for it
    intent_at: float | None = None  # wall time of the last intent
    asset_ids: list[str] = field(default_factory=list)
    attempts: int = 0  # submissions (intents) so far
    job_failures: int = 0  # refunded job failures so far
    cost: float | None = None
    reason: str | None = None
    permanent: bool = False
    done_digest: str | None = None  # digest of the files on disk
    files: list[dict[str, Any]] = field(default_factory=list)
    updated: float | None = None

    @property
    def pending_job(self) -> bool:
        return self.status in (Status.SUBMITTING, Status.IN_FLIGHT, Status.DOWNLOADING)


@dataclass(slots=True)
class Replay:
    """Everything a journal says: batch header, task states, uploads, problems seen."""

    batch: str | None = None
    base_seed: int | None = None
    tasks: dict[str, TaskState] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)  # audio sha256 -> asset id
    warnings: list[str] = field(default_factory=list)
    spent: float = 0.0  # creative units of every job that succeeded, across all runs


def replay(lines: Iterable[str | bytes], source: str = "journal") -> Replay:
    """Fold journal lines into task states (see `_replay`), with the collector paused."""
    with paused_gc():
        return _replay(lines, source)


def _replay(lines: Iterable[str | bytes], source: str) -> Replay:
    """Fold journal lines into task states. Linear in the number of lines.

    A torn or garbled line, or an event type this version does not know, is skipped
    with a warning naming its line; only a header from another version is fatal.
    """
    out = Replay()
    tasks = out.tasks
    for number, ev in _decode(lines):
        kind = ev.get("ev") if isinstance(ev, dict) else None
        if kind is None:
            if ev is not _BLANK:
                out.warnings.append(f"{source}:{number}: unreadable line skipped")
            continue
        if kind == "batch":
            if ev.get("v", VERSION) > VERSION:
                raise JournalError(f"{source}:{number}: journal version {ev.get('v')} is newer than this batchgen")
            out.batch = ev.get("batch")
            if ev.get("base_seed") is not None:
                out.base_seed = ev["base_seed"]
            continue
        if kind == "upload":
            out.uploads[ev["sha256"]] = ev["asset_id"]
            continue
        name = ev.get("task")
        if not isinstance(name, str):
            out.warnings.append(f"{source}:{number}: event without a task skipped")
            continue
        st = tasks.get(name)
        if st is None:
            st = tasks[name] = TaskState()
        if kind == "succeeded":
            out.spent += ev.get("cost") or 0.0
        if not _apply(st, kind, ev):
            out.warnings.append(f"{source}:{number}: unknown event {kind!r} skipped")
    return out


_BLANK = object()


def _decode(lines: Iterable[str | bytes]) -> Iterable[tuple[int, Any]]:
    """(line number, decoded event) pairs; None for a line that is not JSON.

    A journal of 400,000 lines decodes several times faster as one JSON array than
    line by line; any damage sends it down the line-by-line path, which finds the line.
    """
    raw = [line.decode() if isinstance(line, bytes) else line for line in lines]
    stripped = [line.strip() for line in raw]
    if all(stripped):
        try:
            return enumerate(json.loads("[" + ",".join(stripped) + "]"), start=1)
        except ValueError:
            pass
    return ((n, _one(line)) for n, line in enumerate(stripped, start=1))


def _one(line: str) -> Any:
    if not line:
        return _BLANK
    try:
        return json.loads(line)
    except ValueError:
        return None


def _apply(st: TaskState, kind: str, ev: dict[str, Any]) -> bool:
    st.updated = ev.get("t", st.updated)
    if kind == "intent":
        st.status = Status.SUBMITTING
        st.digest = ev.get("digest")
        st.intent_at = ev.get("t")
        st.attempts += 1
        st.job_id = None
        st.asset_ids = []
        st.reason = None
    elif kind == "submitted":
        st.status = Status.IN_FLIGHT
        st.job_id = ev["job_id"]
        if ev["job_id"] not in st.job_ids:
            st.job_ids.append(ev["job_id"])
        if ev.get("cost") is not None:
            st.cost = ev["cost"]
    elif kind == "succeeded":
        st.status = Status.DOWNLOADING
        st.asset_ids = list(ev.get("asset_ids", []))
        if ev.get("cost") is not None:
            st.cost = ev["cost"]
    elif kind == "job_failed":
        # Failed jobs are refunded; the task waits for a resubmission (or a `failed`).
        st.status = Status.NEW
        st.job_failures += 1
        st.job_id = None
        st.reason = ev.get("reason")
    elif kind == "done":
        st.status = Status.DONE
        st.done_digest = ev.get("digest", st.digest)
        st.digest = st.done_digest
        st.files = list(ev.get("files", []))
        if ev.get("cost") is not None:
            st.cost = ev["cost"]
        st.reason = None
    elif kind == "failed":
        st.status = Status.FAILED
        st.reason = ev.get("reason")
        st.permanent = bool(ev.get("permanent"))
        st.job_id = None
    elif kind == "withdrawn":
        st.status = Status.NEW  # an intent whose POST was never sent
    elif kind == "status":
        pass  # informational: progress of a running job
    else:
        return False
    return True


def plan_status(digest: str, st: TaskState | None) -> str:
    """What `plan` shows for a task: new, done, changed, in-flight or failed.

    A task whose manifest entry changed since its file (or its failure, or its job in
    flight) is `changed`: the run generates it again.
    """
    if st is None:
        return "new"
    if st.status is Status.DONE:
        return "done" if st.done_digest == digest else "changed"
    if st.digest is not None and st.digest != digest:
        return "changed"
    if st.pending_job:
        return "in-flight"
    if st.status is Status.FAILED:
        return "failed"
    return "new"


def journal_path(batch_dir: Path) -> Path:
    return batch_dir / STATE_DIR / JOURNAL


def read(batch_dir: Path) -> Replay:
    """Replay the batch folder's journal (an empty replay when there is none)."""
    path = journal_path(batch_dir)
    try:
        with path.open("rb") as fh:
            return replay(fh, str(path))
    except FileNotFoundError:
        return Replay()


class Journal:
    """The batch's journal, open for appending. One instance, owned by the runner."""

    def __init__(self, batch_dir: Path) -> None:
        self.path = journal_path(batch_dir)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
        except OSError as err:
            raise DiskError(str(self.path), err) from None
        self._appended = 0  # events written so far
        self._synced = 0  # events known to be on disk
        self._sync_lock = asyncio.Lock()
        self._heal_torn_tail()

    def _heal_torn_tail(self) -> None:
        # A crash mid-write can leave a last line without its newline; start ours on a
        # fresh line so the next event is not glued onto the torn one.
        size = self._fh.tell()
        if size:
            with self.path.open("rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    self._write(b"\n", durable=False)

    def append(self, kind: str, durable: bool = False, **fields: Any) -> None:
        """Write one event; with `durable`, it is on disk before this returns."""
        ev = {"ev": kind, "t": round(time.time(), 3), **fields}
        self._write(json.dumps(ev, separators=(",", ":")).encode() + b"\n", durable)

    async def commit(self, kind: str, **fields: Any) -> None:
        """Write one event and return once it is on disk (group commit).

        The write and flush are synchronous, so from the moment this is called the
        event survives the process being killed. The fsync, which only guards against
        power loss, runs in a thread, and one fsync covers every event written before
        it started: 64 submissions at once cost a few fsyncs instead of 64, and the
        event loop never waits on the disk.
        """
        self.append(kind, **fields)
        target = self._appended
        async with self._sync_lock:
            if self._synced >= target:
                return  # an fsync that started after our write already covered it
            upto = self._appended
            try:
                await asyncio.to_thread(os.fsync, self._fh.fileno())
            except OSError as err:
                raise DiskError(str(self.path), err) from None
            self._synced = max(self._synced, upto)

    def _write(self, data: bytes, durable: bool) -> None:
        try:
            self._fh.write(data)
            self._fh.flush()
            self._appended += 1
            if durable:
                os.fsync(self._fh.fileno())
                self._synced = self._appended
        except OSError as err:
            raise DiskError(str(self.path), err) from None

    def close(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            pass
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

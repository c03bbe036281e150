"""The ledger: the one owner of a batch's task states, its journal, and the figures from them.

State changes in exactly one way, `record`: the event is appended to the journal and
then applied to memory by `state.apply`, the same function a replay uses. `run`,
`status`, `plan` and `report` all read a batch through a ledger, so they always agree:
counts, spending and what is left are computed from the states, never kept alongside.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..core.errors import DiskError, JournalError
from ..core.events import BatchStarted, Event, encode
from ..core.state import (
    PLAIN,
    Book,
    PlanStatus,
    Status,
    TaskState,
    admit,
    apply,
    kept_events,
    plan_status,
    replay,
    same_story,
)
from ..core.task import Task
from . import files
from .journal import Journal, journal_path, read_lines

PLAN_STATUSES = tuple(PlanStatus)
TO_GENERATE = frozenset({PlanStatus.NEW, PlanStatus.CHANGED, PlanStatus.MISSING, PlanStatus.FAILED})  # a run does
TO_PAY = frozenset({PlanStatus.NEW, PlanStatus.CHANGED, PlanStatus.FAILED})  # `missing` is fetched again, free
# A run compacts a journal of more lines than this that holds more than twice the lines
# its compacted form would (one per task and upload, and the header).
COMPACT_PAST = 100_000


@dataclass(frozen=True, slots=True)
class Compacted:
    """What a compaction did: the journal's lines and bytes before and after."""

    lines: tuple[int, int]
    size: tuple[int, int]
    dropped: tuple[str, ...] = ()  # the warnings of the damaged lines it did not carry over

    @property
    def summary(self) -> str:
        (a, b), (x, y) = self.lines, self.size
        left = f"; {len(self.dropped)} damaged line(s) not carried over" if self.dropped else ""
        return f"journal compacted: {a:,} lines to {b:,}, {x / 1e6:.1f} MB to {y / 1e6:.1f} MB{left}"


@dataclass(slots=True)
class Figures:
    """What `status` shows: counts by plan status, credits, and the failures' reasons."""

    counts: Counter[str] = field(default_factory=Counter)
    spent: float = 0.0  # every job the journal says was charged, in all runs
    committed: float = 0.0  # quotes of jobs still running
    failures: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)  # left by a run for the next one, and why
    orphans: int = 0  # tasks in the journal that the manifest no longer has

    @property
    def left(self) -> int:
        return sum(n for status, n in self.counts.items() if status in TO_GENERATE)


class Ledger:
    """A batch's states and journal. `Ledger.read` for looking, `Ledger.open` for a run."""

    def __init__(self, folder: Path, book: Book, journal: Journal | None = None) -> None:
        self.folder = folder
        self._book = book
        self._journal = journal
        self.recorded: Counter[str] = Counter()  # events recorded through this ledger, by kind
        self.compacted: Compacted | None = None  # what opening it compacted, if anything

    @classmethod
    def read(cls, folder: Path, batch: str) -> Ledger:
        """The batch's ledger from its journal, read-only; refuses a journal of another batch."""
        lines = read_lines(folder)
        book = replay(lines or (), str(journal_path(folder)))
        if book.batch is not None and book.batch != batch:
            raise JournalError(
                f"{journal_path(folder)}: journal belongs to batch {book.batch!r}, not {batch!r}; "
                "use another --out or batch name"
            )
        return cls(folder, book)

    @classmethod
    def open(cls, folder: Path, batch: str, *, compact_past: int | None = COMPACT_PAST) -> Ledger:
        """The batch's ledger, open for recording (the caller holds the batch lock); its
        journal compacted first when longer than `compact_past` lines and mostly history,
        unless it has damaged lines: those are left for the user to see (`batchgen compact`
        drops them, and says so)."""
        ledger = cls.read(folder, batch)
        ledger._journal = Journal(folder)
        book = ledger._book
        compacted = 1 + len(book.uploads) + len(book.tasks)  # the lines `kept_events` makes
        if compact_past is not None and not book.warnings and book.lines > max(compact_past, 2 * compacted):
            try:
                ledger.compacted = ledger.compact()
            except (JournalError, DiskError) as err:  # the journal is as it was: run on it
                book.warnings.append(f"not compacted: {err}")
        return ledger

    @property
    def book(self) -> Book:
        return self._book

    @property
    def warnings(self) -> list[str]:
        return self._book.warnings

    @property
    def base_seed(self) -> int | None:
        return self._book.base_seed

    @property
    def uploads(self) -> Mapping[str, str]:
        return self._book.uploads

    @property
    def owners(self) -> Mapping[str, str]:
        """Every job id the journal knows, and the task it belongs to."""
        return self._book.owners

    @property
    def tasks(self) -> Mapping[str, TaskState]:
        return self._book.tasks

    def quoted(self) -> float:
        """Creative units the API quoted for the jobs running now: money in flight, from the states."""
        tasks = self._book.tasks
        return sum(tasks[name].committed for name in self._book.running)

    def state(self, name: str) -> TaskState | None:
        return self._book.tasks.get(name)

    def record(self, event: Event, *, durable: bool = False) -> None:
        """Append an event to the journal, then apply it: the one way task state changes.

        The event's fields were checked when it was built, and whether it fits the state
        it meets is checked here, before a byte is written (`BadEvent`). Written before it
        is applied: if the disk refuses, memory is left as the journal has it.
        """
        if self._journal is None:
            raise RuntimeError("this ledger was opened read-only")
        book = self._book
        admit(book, event)
        t = round(time.time(), 3)
        line = encode(event, t=t, n=book.lines + 1)  # no two lines alike: an exact copy is a duplicate
        self._journal.write(line, durable=durable)
        book.lines += 1
        apply(book, event, t)
        self.recorded[event.kind] += 1

    async def commit(self, event: Event) -> None:
        """`record`, then wait until the event is on disk (fsyncs grouped with others)."""
        self.record(event)
        assert self._journal is not None
        await self._journal.sync()

    def expecting(self) -> contextlib.AbstractContextManager[None]:
        """An event is on its way (a POST is out): `commit`s meanwhile wait for it to share their fsync."""
        return contextlib.nullcontext() if self._journal is None else self._journal.expecting()

    def start(self, batch: str, base_seed: int | None) -> None:
        """Write the batch header when the journal has none, or a base seed it does not know."""
        book = self._book
        if book.batch is None or (base_seed is not None and base_seed != book.base_seed):
            self.record(BatchStarted(v=PLAIN, batch=batch, base_seed=base_seed, version=__version__), durable=True)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def compact(self) -> Compacted:
        """Rewrite the journal as the events that still matter (the caller holds the batch lock).

        One `Kept` line per task keeps its whole state: its done record, every job id ever
        paid for with its charge, an intent with no answer yet (a job may exist), attempt
        counts; then the uploads and the header. The new lines are replayed and compared with
        the book before they replace the journal, atomically and synced with the folder: a
        crash at any moment leaves the old journal or the new one, and both tell the same
        story. Lines that were skipped on reading (their warnings) are not carried over.
        """
        if self._journal is None:
            raise RuntimeError("this ledger was opened read-only")
        book, path = self._book, self._journal.path
        t = round(time.time(), 3)
        lines = [encode(event, t=t, n=n) for n, event in enumerate(kept_events(book), start=1)]
        again = replay(lines, f"{path} (compacted)")
        if again.warnings or not same_story(book, again):
            raise JournalError(f"{path}: compacting would change what the journal says; it was left as it is")
        before = os.stat(path).st_size
        data = b"".join(lines)
        self._journal.close()
        try:
            files.write_atomic(path, data, durable=True)
            files.sync_dir(path.parent)
        finally:
            self._journal = Journal(self.folder)
        done = Compacted((book.lines, len(lines)), (before, len(data)), tuple(book.warnings))
        book.lines = len(lines)
        book.warnings.clear()
        return done

    def plan(self, task: Task, present: Mapping[str, int] | None = None) -> PlanStatus:
        """new, done, changed, missing, in-flight or failed: what a run would do with `task`.

        `present` (the batch folder's files and their sizes) turns a done task whose file
        was deleted, or is not the size the journal recorded (a power cut before the
        disk had it), into `missing`: a run fetches it again from its asset.
        """
        st = self._book.tasks.get(task.name)
        status = plan_status(task.digest, st)
        if status is PlanStatus.DONE and present is not None and st is not None:
            kept = [*st.files, st.sidecar] if st.sidecar is not None else st.files
            if not all(present.get(f["path"]) == f["bytes"] for f in kept):
                return PlanStatus.MISSING
        return status

    def files_present(self) -> dict[str, int]:
        """The regular files in the batch folder and their sizes (one listing)."""
        return files.sizes(self.folder)

    def rows(self, tasks: Iterable[Task]) -> list[tuple[Task, PlanStatus]]:
        present = self.files_present()
        return [(task, self.plan(task, present)) for task in tasks]

    def hops_made(self, tasks: Iterable[Task]) -> tuple[int, int]:
        """Hops the chained tracks among `tasks` need, and how many of them are made."""
        need = made = 0
        for task in tasks:
            if task.hop_count == 1:
                continue
            need += task.hop_count
            st = self._book.tasks.get(task.name)
            if st is not None and st.status is Status.DONE:
                made += task.hop_count
            elif st is not None and st.digest == task.digest:
                made += sum(hop.status in (Status.DOWNLOADING, Status.DONE) for hop in st.hops)
        return need, made

    def figures(self, rows: Iterable[tuple[Task, str]]) -> Figures:
        """Counts, credits and failures for the manifest's tasks (`rows`), from their states."""
        out = Figures(spent=self._book.spent)
        names = set()
        for task, status in rows:
            names.add(task.name)
            out.counts[status] += 1
            st = self._book.tasks.get(task.name)
            if st is not None:
                out.committed += st.committed
                if status == "failed" and st.reason:
                    out.failures[task.name] = st.reason
                elif st.deferred and status not in (PlanStatus.DONE, PlanStatus.FAILED):
                    out.waiting[task.name] = st.deferred
        out.orphans = sum(1 for name in self._book.tasks if name not in names)
        return out

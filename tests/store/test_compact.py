"""Compaction: the journal rewritten as one line per task tells the same story, then and later,
and a compaction killed at any moment loses nothing."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchgen.core.errors import JournalError
from batchgen.core.events import (
    _HOP_CHECKS,
    _STATE_CHECKS,
    STATUSES,
    BadEvent,
    Deferred,
    Intent,
    JobFailed,
    Kept,
    Submitted,
    decode,
)
from batchgen.core.state import HopState, Status, TaskState, replay, same_story, state_doc
from batchgen.store.journal import journal_path
from batchgen.store.ledger import Ledger

from .test_ledger import SETTINGS, _drive


def _lines(folder: Path) -> list[bytes]:
    return journal_path(folder).read_bytes().splitlines()


def test_kept_knows_every_status_and_field() -> None:
    """The statuses and fields a `Kept` line may hold are exactly the states' own."""
    assert frozenset(s.value for s in Status) == STATUSES
    assert _STATE_CHECKS.keys() == {f.name for f in fields(TaskState)}
    assert _HOP_CHECKS.keys() == {f.name for f in fields(HopState)}


@SETTINGS
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 150), more=st.integers(0, 60))
def test_a_compacted_journal_tells_the_same_story_now_and_later(
    tmp_path_factory: pytest.TempPathFactory, seed: int, steps: int, more: int
) -> None:
    """Whatever a journal holds (retries, refunds kept or not, chains between hops, intents with
    no answer, regenerated tasks, uploads), its compacted form replays to the same book, and
    the same events recorded on after it keep the two books the same."""
    long, short = tmp_path_factory.mktemp("long"), tmp_path_factory.mktemp("short")
    ledger = Ledger.open(long, "b", compact_past=None)
    _drive(ledger, random.Random(seed), steps)
    ledger.close()
    shutil.copytree(long, short, dirs_exist_ok=True)
    compacting = Ledger.open(short, "b", compact_past=None)
    done = compacting.compact()
    compacting.close()
    before = Ledger.read(long, "b").book
    after = Ledger.read(short, "b")
    assert after.warnings == [] and same_story(before, after.book)
    assert done.lines[1] == len(_lines(short)) == 1 + len(before.uploads) + len(before.tasks)
    for folder in (long, short):  # the same next events, on each, at the same wall time
        on = Ledger.open(folder, "b", compact_past=None)
        with mock.patch("time.time", return_value=1_800_000_000.0):
            _drive(on, random.Random(seed + 1), more)
        on.close()
    assert same_story(Ledger.read(long, "b").book, Ledger.read(short, "b").book)


def test_compaction_keeps_what_money_and_resumes_need(tmp_path: Path) -> None:
    """Every job ever paid for stays, with its charge and its task; a kept charge stays kept;
    an intent with no answer stays an intent (a job may exist); attempts keep counting."""
    ledger = Ledger.open(tmp_path, "b", compact_past=None)
    ledger.start("b", 7)
    for attempt in (1, 2):
        ledger.record(Intent(task="a", digest="d", attempt=attempt))
        ledger.record(Submitted(task="a", job_id=f"job_a{attempt}", cost=4.0))
        ledger.record(JobFailed(task="a", job_id=f"job_a{attempt}", reason="x", refunded=attempt == 1, cost=4.0))
    ledger.record(Intent(task="b", digest="d", attempt=1))  # the crash window
    ledger.record(Deferred(task="a", reason="its answer was lost"))
    ledger.compact()
    ledger.close()
    book = Ledger.read(tmp_path, "b").book
    a, b = book.tasks["a"], book.tasks["b"]
    assert book.owners == {"job_a1": "a", "job_a2": "a"} and a.job_ids == ["job_a1", "job_a2"]
    assert book.spent == book.kept == 4.0 and a.charges == {"job_a2": 4.0}
    assert a.attempts == 2 and a.hops[0].failures == 2 and a.reason == "x"
    assert a.deferred == "its answer was lost"
    assert b.status is Status.SUBMITTING and b.intent_at is not None and book.base_seed == 7
    assert len(_lines(tmp_path)) == 3


@pytest.mark.parametrize(
    "state",
    [
        {"hops": []},
        {"hops": [{"status": "lost"}]},
        {"hops": [{"status": "new", "job_id": "../x"}]},
        {"hops": [{"status": "new"}], "charges": {"job_1": 2.0}},  # a charge for a job it never had
        {"hops": [{"status": "new"}], "job_ids": ["job_1"], "charges": {"job_1": -1.0}},
        {"hops": [{"status": "new"}], "outcome": "maybe"},
        {"hops": [{"status": "new"}], "files": [{"path": "../../etc/passwd", "bytes": 1, "sha256": "x"}]},
        {"hops": [{"status": "new"}], "mystery": 1},
        {"hops": [{"status": "new", "detail": {"discount": "lots"}}]},
        {"hops": [{"status": "new"}] * 1001},
        "not a state",
    ],
)
def test_a_kept_line_is_checked_like_every_other(state: Any) -> None:
    with pytest.raises(BadEvent):
        decode({"ev": "kept", "task": "a", "state": state})


def test_a_kept_line_cannot_take_another_tasks_job(tmp_path: Path) -> None:
    lines = [
        json.dumps({"ev": "kept", "task": "a", "state": {"hops": [{"status": "new"}], "job_ids": ["job_1"]}}),
        json.dumps({"ev": "kept", "task": "b", "state": {"hops": [{"status": "new"}], "job_ids": ["job_1"]}}),
    ]
    book = replay(lines)
    assert book.owners == {"job_1": "a"} and "b" not in book.tasks
    assert len(book.warnings) == 1 and "belongs to task 'a'" in book.warnings[0]


def test_a_run_compacts_a_long_journal_when_it_opens_it(tmp_path: Path) -> None:
    """Past the threshold and mostly history, opening for a run compacts; a short one is left."""
    ledger = Ledger.open(tmp_path, "b", compact_past=None)
    _drive(ledger, random.Random(3), 200)
    ledger.close()
    before = Ledger.read(tmp_path, "b").book
    n = len(_lines(tmp_path))
    assert Ledger.open(tmp_path, "b", compact_past=n).compacted is None  # not past it
    opened = Ledger.open(tmp_path, "b", compact_past=50)
    assert opened.compacted is not None and opened.compacted.lines == (n, len(_lines(tmp_path)))
    opened.record(Intent(task="z", digest="d", attempt=1))  # and it records on, after the compacted lines
    opened.close()
    again = Ledger.read(tmp_path, "b").book
    assert again.tasks.pop("z").status is Status.SUBMITTING and same_story(before, again)


# A kill at any moment: the compaction runs in a forked child that dies (os._exit, no cleanup,
# as a SIGKILL) just before its k-th system call of those that change files, or halfway
# through the k-th write.

CALLS = ("open", "write", "fsync", "close", "replace", "unlink")


def _dies_at(k: int, folder: Path) -> None:
    count = [0]

    def hook(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] == k:
                if name == "write" and len(args[1]) > 1:
                    real(args[0], bytes(args[1][: len(args[1]) // 2]))  # a torn write
                os._exit(137)
            return real(*args, **kwargs)

        return call

    for name in CALLS:
        setattr(os, name, hook(name, getattr(os, name)))
    ledger = Ledger.open(folder, "b", compact_past=None)
    ledger.compact()
    ledger.close()
    os._exit(0)


def _compact_dying_at(k: int, folder: Path) -> bool:
    """Compact `folder`'s journal in a child killed at call `k`; True if it finished first."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            _dies_at(k, folder)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 137), f"the compaction failed on its own (exit {code})"
    return code == 0


def test_a_compaction_killed_at_any_moment_loses_nothing(tmp_path: Path) -> None:
    source = tmp_path / "source"
    ledger = Ledger.open(source, "b", compact_past=None)
    _drive(ledger, random.Random(11), 300)
    ledger.close()
    story = Ledger.read(source, "b").book
    k, finished = 0, False
    while not finished:
        k += 1
        folder = tmp_path / f"k{k}"
        shutil.copytree(source, folder)
        finished = _compact_dying_at(k, folder)
        read = Ledger.read(folder, "b")
        assert read.warnings == [] or not finished
        assert same_story(story, read.book), f"killed at call {k}: the journal says something else"
        resumed = Ledger.open(folder, "b", compact_past=None)  # what the next command does
        resumed.compact()
        resumed.close()
        assert same_story(story, Ledger.read(folder, "b").book)
        assert sorted(p.name for p in (folder / ".batchgen").iterdir()) == ["state.jsonl"]
    assert k > 8  # it was killed at every call it makes: opens, writes, fsyncs, the rename


def test_a_compaction_that_would_change_the_story_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger.open(tmp_path, "b", compact_past=None)
    ledger.record(Intent(task="a", digest="d", attempt=1))
    before = journal_path(tmp_path).read_bytes()
    import batchgen.store.ledger as module

    monkeypatch.setattr(
        module, "kept_events", lambda book: iter([Kept(task="a", state={"hops": [{"status": "done"}]})])
    )
    with pytest.raises(JournalError, match="left as it is"):
        ledger.compact()
    ledger.close()
    assert journal_path(tmp_path).read_bytes() == before


def test_state_doc_leaves_defaults_out() -> None:
    book = replay([json.dumps({"ev": "intent", "t": 5.5, "task": "a", "digest": "d", "attempt": 1})])
    doc = state_doc(book.tasks["a"])
    assert doc == {"digest": "d", "attempts": 1, "intent_at": 5.5, "updated": 5.5, "hops": [{"status": "submitting"}]}


def test_a_compacted_journal_is_refused_by_a_batchgen_that_cannot_read_it(tmp_path: Path) -> None:
    """Its header says version 2 (0.1.0 and 0.2.0 read 1 and refuse what is newer, rather than
    skip `kept` lines and see a batch with no tasks); a plain journal keeps saying 1."""
    ledger = Ledger.open(tmp_path, "b", compact_past=None)
    ledger.start("b", 1)
    assert json.loads(_lines(tmp_path)[0])["v"] == 1
    ledger.record(Intent(task="a", digest="d", attempt=1))
    ledger.compact()
    ledger.close()
    assert json.loads(_lines(tmp_path)[0])["v"] == 2
    newer = journal_path(tmp_path)
    newer.write_bytes(b'{"ev":"batch","v":3,"batch":"b"}\n' + newer.read_bytes())
    with pytest.raises(JournalError, match="journal version 3 is newer than this batchgen"):
        Ledger.read(tmp_path, "b")


def test_damaged_lines_are_left_for_the_user_then_named_when_dropped(tmp_path: Path) -> None:
    """A run does not compact a journal with damaged lines (they stay where a user can look);
    `compact` drops them, and names each."""
    ledger = Ledger.open(tmp_path, "b", compact_past=None)
    _drive(ledger, random.Random(5), 120)
    ledger.close()
    with journal_path(tmp_path).open("ab") as fh:
        fh.write(b'{"ev":"submitted","task":"a","job_id":"../x"}\n')
    n = len(_lines(tmp_path))
    opened = Ledger.open(tmp_path, "b", compact_past=10)
    assert opened.compacted is None and len(opened.warnings) == 1
    done = opened.compact()
    opened.close()
    assert done.dropped == (f"{journal_path(tmp_path)}:{n}: job_id missing or not a valid id; line skipped",)
    assert "1 damaged line(s) not carried over" in done.summary
    assert Ledger.read(tmp_path, "b").warnings == []

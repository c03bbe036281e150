"""The ledger: one owner of task state, whose live story and replayed story are the same.

Hypothesis drives random sequences of run events (valid ones, and stray ones a real
journal can hold: events about other jobs, late duplicates) through a live ledger,
then checks the journal it wrote replays to the same states, also when the journal is
cut at any byte (a crash), resumed and written on, or has lines duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.core.errors import DiskError
from batchgen.core.events import Failed, Intent, JobFailed, Submitted, Succeeded, decode
from batchgen.core.state import Book, Status, apply, replay
from batchgen.store.journal import Syncer, journal_path
from batchgen.store.ledger import Ledger

NAMES = ("a", "b", "c")
SHA = "ab" * 32


def _event(ledger: Ledger, rng: random.Random) -> tuple[str, str | None, dict[str, object]]:
    """A plausible next event for a random task, given what the ledger says now."""
    name = rng.choice(NAMES)
    st_ = ledger.state(name)
    hops = 3 if name == "c" else 1
    hop = st_.hop if st_ is not None and len(st_.hops) == hops else 0
    status = st_.hops[hop].status if st_ is not None and len(st_.hops) == hops else Status.NEW
    attempt = (st_.attempts if st_ else 0) + 1
    job = f"job_{rng.randrange(1000)}"
    current = st_.hops[hop].job_id if st_ is not None and len(st_.hops) == hops else None
    digest = rng.choice(("d1", "d1", "d1", "d2"))
    choices: list[tuple[str, str | None, dict[str, object]]] = [
        ("intent", name, {"hop": hop + 1, "hops": hops, "digest": digest, "attempt": attempt}),
        ("failed", name, {"reason": "gave up", "permanent": rng.random() < 0.5, "attempt": attempt - 1}),
        ("upload", None, {"sha256": SHA, "asset_id": f"asset_up{rng.randrange(3)}"}),
        ("batch", None, {"v": 1, "batch": "b", "base_seed": rng.randrange(10)}),
        ("succeeded", name, {"hop": hop + 1, "job_id": job, "asset_ids": ["asset_x"], "cost": 1.0}),  # a stray job
    ]
    if status is Status.SUBMITTING:
        choices += [("submitted", name, {"hop": hop + 1, "job_id": job, "cost": float(rng.randrange(1, 9))})] * 3
        choices += [("withdrawn", name, {"hop": hop + 1})]
    if status is Status.IN_FLIGHT and current:
        assets = [f"asset_{rng.randrange(1000)}"]
        choices += [("succeeded", name, {"hop": hop + 1, "job_id": current, "asset_ids": assets, "cost": 2.0})] * 3
        refunded = rng.random() < 0.7
        failure = {"hop": hop + 1, "job_id": current, "reason": "crash", "refunded": refunded, "cost": 3.0}
        choices += [("job_failed", name, failure)] * 2
    if st_ is not None and st_.succeeded and st_.outcome is None:
        files = [{"path": f"{name}.wav", "bytes": 10, "sha256": "x"}]
        choices += [("done", name, {"digest": st_.digest, "files": files, "job_id": st_.hops[-1].job_id})] * 3
    if status is Status.DOWNLOADING and hops > 1:
        record = {"path": f".batchgen/hops/{name}.h{hop + 1}.wav", "bytes": 5, "sha256": "y"}
        choices += [("hop_done", name, {"hop": hop + 1, "file": record})] * 2
    return rng.choice(choices)


def _drive(ledger: Ledger, rng: random.Random, steps: int) -> None:
    for _ in range(steps):
        kind, name, fields = _event(ledger, rng)
        ledger.record(decode({"ev": kind, "task": name, **fields}).event)


def _same(a: Book, b: Book) -> None:
    assert a.tasks == b.tasks
    assert (a.uploads, a.batch, a.base_seed) == (b.uploads, b.batch, b.base_seed)
    assert a.spent == pytest.approx(b.spent)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 120))
def test_live_state_is_the_replayed_state(tmp_path_factory: pytest.TempPathFactory, seed: int, steps: int) -> None:
    """Whatever events a run records, replaying its journal gives exactly its live states."""
    folder = tmp_path_factory.mktemp("l")
    ledger = Ledger.open(folder, "b")
    _drive(ledger, random.Random(seed), steps)
    ledger.close()
    again = Ledger.read(folder, "b")
    assert again.warnings == []
    _same(ledger.book, again.book)


@SETTINGS
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 80), cut=st.floats(0, 1), more=st.integers(0, 40))
def test_a_crash_at_any_byte_then_a_resume_tells_one_story(
    tmp_path_factory: pytest.TempPathFactory, seed: int, steps: int, cut: float, more: int
) -> None:
    """Cut the journal anywhere (a crash): it replays to the states of the events wholly written;
    a resumed ledger writing on from there still equals its own replay."""
    folder = tmp_path_factory.mktemp("c")
    rng = random.Random(seed)
    ledger = Ledger.open(folder, "b")
    _drive(ledger, rng, steps)
    ledger.close()
    path = journal_path(folder)
    data = path.read_bytes()
    kept = data[: int(len(data) * cut)]
    path.write_bytes(kept)
    expected = Book()
    *whole, tail = kept.split(b"\n")
    for line in whole:
        apply(expected, *decode(json.loads(line))[:2])
    with contextlib.suppress(ValueError):  # cut just before its newline: the event was written whole
        apply(expected, *decode(json.loads(tail))[:2])  # (a torn line never happened)
    crashed = Ledger.read(folder, "b")
    _same(expected, crashed.book)
    resumed = Ledger.open(folder, "b")
    _drive(resumed, rng, more)
    resumed.close()
    _same(resumed.book, Ledger.read(folder, "b").book)


def test_a_line_the_disk_refuses_never_reaches_the_file_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails part-way (a full disk) leaves at most a fragment, on a line of its
    own: the event is not in memory, is never written later, and the next line replays."""
    ledger = Ledger.open(tmp_path, "b")
    ledger.record(Intent(task="a", hop=1, hops=1, digest="d1", attempt=1))
    real_write = os.write
    tries: list[int] = []

    def full(fd: int, data: bytes) -> int:
        tries.append(fd)
        if len(tries) == 1:
            return real_write(fd, bytes(data[:9]))  # part of the line gets to the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DiskError):
        ledger.record(Submitted(task="a", hop=1, job_id="job_lost", cost=1.0))
    monkeypatch.undo()
    st_ = ledger.state("a")
    assert st_ is not None and st_.hops[0].status is Status.SUBMITTING  # memory is as the journal has it
    ledger.record(Submitted(task="a", hop=1, job_id="job_kept", cost=2.0))
    ledger.close()
    lines = journal_path(tmp_path).read_bytes().splitlines()
    assert len(lines) == 3 and not lines[1].endswith(b"}")  # the fragment, alone on its line
    again = Ledger.read(tmp_path, "b")
    assert len(again.warnings) == 1 and "job_lost" not in journal_path(tmp_path).read_text()
    _same(ledger.book, again.book)
    assert again.tasks["a"].hops[0].job_id == "job_kept"


@SETTINGS
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 80), copies=st.lists(st.integers(0, 10**6), max_size=30))
def test_duplicated_lines_replay_to_the_same_state(
    tmp_path_factory: pytest.TempPathFactory, seed: int, steps: int, copies: list[int]
) -> None:
    """Lines copied anywhere in the journal (a bad merge, a restore) change no state and no spending."""
    folder = tmp_path_factory.mktemp("d")
    ledger = Ledger.open(folder, "b")
    _drive(ledger, random.Random(seed), steps)
    ledger.close()
    lines = journal_path(folder).read_bytes().splitlines()
    noisy = list(lines)
    for where in copies:  # a copy of a line, somewhere after it
        original = where % len(lines)
        at = noisy.index(lines[original]) + 1
        noisy.insert(at + where % (len(noisy) - at + 1), lines[original])
    _same(replay(lines), replay(noisy))


def test_a_changed_task_and_a_retried_task_start_their_job_retries_afresh(tmp_path: Path) -> None:
    """Failures under an old digest do not count against the new one, live and replayed alike."""
    ledger = Ledger.open(tmp_path, "b")
    for attempt, digest in ((1, "old"), (2, "old"), (3, "new")):
        ledger.record(Intent(task="a", digest=digest, attempt=attempt))
        ledger.record(Submitted(task="a", job_id=f"job_{attempt}", cost=1.0))
        ledger.record(JobFailed(task="a", job_id=f"job_{attempt}", reason="x", refunded=True))
    live = ledger.state("a")
    assert live is not None and live.hops[0].failures == 1
    ledger.record(Failed(task="a", reason="gave up", attempt=3))
    ledger.record(Intent(task="a", digest="new", attempt=4))  # --retry-failed
    assert ledger.state("a").hops[0].failures == 0  # type: ignore[union-attr]
    ledger.close()
    assert Ledger.read(tmp_path, "b").state("a") == ledger.state("a")


def test_a_job_id_belongs_to_one_task_for_good(tmp_path: Path) -> None:
    """A server that answers two tasks with one job id cannot put both on it: the second claim
    is not applied (live and replayed alike), so the task waits as unsubmitted, not on another's job."""
    ledger = Ledger.open(tmp_path, "b")
    for name in ("a", "b"):
        ledger.record(Intent(task=name, digest="d", attempt=1))
        ledger.record(Submitted(task=name, job_id="job_same", cost=1.0))
    assert ledger.owners == {"job_same": "a"}
    a, b = ledger.state("a"), ledger.state("b")
    assert a is not None and a.hops[0].job_id == "job_same" and a.hops[0].status is Status.IN_FLIGHT
    assert b is not None and b.hops[0].job_id is None and b.hops[0].status is Status.SUBMITTING
    ledger.close()
    again = Ledger.read(tmp_path, "b")
    assert again.state("b") == b and again.owners == {"job_same": "a"}


def test_spending_counts_each_job_once_and_keeps_unrefunded_failures(tmp_path: Path) -> None:
    """A refunded failure costs nothing, a failure the API kept costs its charge, a success its cost."""
    ledger = Ledger.open(tmp_path, "b")
    ledger.record(Intent(task="a", digest="d", attempt=1))
    ledger.record(Submitted(task="a", job_id="job_1", cost=4.0))
    ledger.record(JobFailed(task="a", job_id="job_1", reason="x", refunded=False, cost=4.0))
    ledger.record(Intent(task="a", digest="d", attempt=2))
    ledger.record(Submitted(task="a", job_id="job_2", cost=4.0))
    ledger.record(JobFailed(task="a", job_id="job_2", reason="x", refunded=True))
    ledger.record(Intent(task="a", digest="d", attempt=3))
    ledger.record(Submitted(task="a", job_id="job_3", cost=4.0))
    ledger.record(Succeeded(task="a", job_id="job_3", asset_ids=["asset_1"], cost=4.0))
    ledger.record(Succeeded(task="a", job_id="job_3", asset_ids=["asset_1"], cost=4.0))  # said twice
    assert ledger.book.spent == 8.0
    ledger.close()
    assert Ledger.read(tmp_path, "b").book.spent == 8.0


async def test_commits_of_one_moment_share_one_fsync_round(tmp_path: Path) -> None:
    """Writers arriving together (a burst of POST answers) wake together after one fsync."""
    ledger = Ledger.open(tmp_path, "b")
    ledger.start("b", None)
    journal = ledger._journal
    assert journal is not None
    syncer = journal._syncer
    before = syncer.rounds
    await asyncio.gather(
        *(ledger.commit(Intent(task=f"t{i}", hop=1, hops=1, digest="d", attempt=1)) for i in range(40))
    )
    assert syncer.rounds - before == 1
    assert not syncer._busy
    ledger.close()
    assert len(Ledger.read(tmp_path, "b").tasks) == 40


async def test_an_fsync_error_reaches_only_its_own_waiters(tmp_path: Path) -> None:
    """One descriptor that cannot be synced (a pipe) fails its waiter; the file's waiter is served."""
    syncer = Syncer()
    read_end, write_end = os.pipe()
    with (tmp_path / "f").open("wb") as fh:
        try:
            good, bad = await asyncio.gather(syncer.sync(fh.fileno()), syncer.sync(write_end), return_exceptions=True)
        finally:
            os.close(read_end)
            os.close(write_end)
    assert good is None
    assert isinstance(bad, OSError)
    assert syncer.rounds == 1


async def test_a_slow_disk_moves_rounds_to_a_thread_and_latecomers_get_the_next_one(tmp_path: Path) -> None:
    syncer = Syncer()
    syncer._threaded_until = float("inf")  # as after a slow fsync
    with (tmp_path / "f").open("wb") as fh:
        first = asyncio.create_task(syncer.sync(fh.fileno()))
        await asyncio.sleep(Syncer.LINGER * 2)  # the first round has started in its thread
        late = [asyncio.create_task(syncer.sync(fh.fileno())) for _ in range(5)]
        await asyncio.wait_for(asyncio.gather(first, *late), 10)
    assert 2 <= syncer.rounds <= 3
    assert not syncer._busy


async def test_a_cancelled_writer_leaves_the_round_to_the_others(tmp_path: Path) -> None:
    syncer = Syncer()
    with (tmp_path / "f").open("wb") as fh:
        gone = asyncio.create_task(syncer.sync(fh.fileno()))
        kept = asyncio.create_task(syncer.sync(fh.fileno()))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.wait_for(kept, 10)
    assert gone.cancelled()
    assert syncer.rounds == 1


@pytest.fixture
def synced_fd(tmp_path: Path) -> Iterator[int]:
    """A descriptor of a regular file, for Syncer rounds."""
    with (tmp_path / "f").open("wb") as fh:
        yield fh.fileno()


async def test_a_round_starts_when_the_loop_is_quiet_not_after_the_linger(
    synced_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers of one moment share one fsync round that starts as soon as a loop pass adds none."""
    monkeypatch.setattr(Syncer, "LINGER", 30.0)
    syncer = Syncer()
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(syncer.sync(synced_fd) for _ in range(20))), 10)
    assert time.monotonic() - started < 5.0  # far below the (patched) linger: no sleep for company
    assert syncer.rounds == 1
    assert not syncer._busy


async def test_a_round_waits_for_a_writer_it_expects(synced_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a POST is out, the round waits for its answer's line and both share one fsync."""
    monkeypatch.setattr(Syncer, "LINGER", 30.0)
    syncer = Syncer()

    async def answered_later() -> None:
        with syncer.expecting():
            for _ in range(20):  # many quiet passes of the loop while the POST is out
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
        await syncer.sync(synced_fd)

    late = asyncio.create_task(answered_later())
    await asyncio.sleep(0)
    first = asyncio.create_task(syncer.sync(synced_fd))
    await asyncio.sleep(0.02)
    assert not first.done()  # the expected writer has not come yet
    await asyncio.wait_for(asyncio.gather(first, late), 10)
    assert syncer.rounds == 1


async def test_an_expected_writer_that_never_comes_delays_a_round_by_the_linger_at_most(
    synced_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A POST that fails (no line follows) holds the round back no longer than LINGER."""
    monkeypatch.setattr(Syncer, "LINGER", 0.2)
    syncer = Syncer()
    with syncer.expecting():
        started = time.monotonic()
        await asyncio.wait_for(syncer.sync(synced_fd), 10)
        waited = time.monotonic() - started
    assert 0.15 <= waited < 5.0
    assert syncer.rounds == 1

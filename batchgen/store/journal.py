"""The journal file: append-only JSON Lines, written synchronously, synced in groups.

`Journal.write` writes one line to the file itself (no buffer) before it returns, so
from that moment the event survives the process being killed. Surviving a power cut
needs an fsync, which `Syncer` runs in rounds for many files at once: 64 submissions at
once cost a few fsyncs instead of 64.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..core.errors import DiskError
from . import files
from .layout import Layout


def journal_path(batch_dir: Path) -> Path:
    return Layout(batch_dir).journal


def read_lines(batch_dir: Path) -> list[bytes] | None:
    """The journal's lines, or None when the batch has none yet (never follows a symlink)."""
    data = files.read_regular(journal_path(batch_dir))
    return None if data is None else data.splitlines()


class Syncer:
    """fsync for many descriptors in rounds: every descriptor asked for by the time a
    round starts is covered by it.

    A round starts once the writers of the moment have all asked: when the event loop
    has gone round once with no new writer and none is expected (`expecting`: a POST
    whose answer will be journaled), or `LINGER` seconds after the first writer asked,
    whichever comes first. Answers to a burst of POSTs arrive one by one over a few
    milliseconds; each writer paying its own fsync would cost a fsync per POST, and a
    fixed wait would cost the process a sleep and a wake-up of its own for every round.
    All writers of a round wake together when it is done. A round runs on the event
    loop itself while fsyncs are quick (a local disk takes 0.1-0.2 ms, far less CPU than
    a hop to a thread and back), and in a worker thread for a while once an fsync has
    taken longer than `SLOW`: a slow disk never stalls the loop, a fast one never pays
    for threads.
    """

    LINGER = 0.01  # seconds a round waits at most for more writers (a POST waits for it: keep it small)
    SLOW = 0.004  # seconds; an fsync slower than this sends rounds to a thread for a while
    BACK_OFF = 30.0  # seconds spent in thread mode after a slow fsync

    def __init__(self) -> None:
        self._waiting: dict[int, list[asyncio.Future[None]]] = {}
        self._asked = 0  # writers waiting for the next round
        self._busy = False  # a round is scheduled or running
        self._scheduled: asyncio.Handle | None = None  # the next round's start, at the latest
        self._checking = False  # a look at whether the writers of the moment are all in
        self._expected = 0  # writers on their way: POSTs sent, their answers not yet journaled
        self._threaded_until = 0.0
        self.rounds = 0

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Tell rounds that a writer is on its way (a POST is out); they wait for it, up to `LINGER`."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1

    async def sync(self, fd: int) -> None:
        """Return once everything written to `fd` before this call is on disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(fd, []).append(future)
        self._asked += 1
        if not self._busy:
            self._busy = True
            self._scheduled = loop.call_later(self.LINGER, self._start)
        if self._scheduled is not None and not self._checking:
            self._checking = True
            loop.call_soon(self._check, self._asked)
        await future  # cancelled, it is simply left out of the round

    def _check(self, asked: int) -> None:
        """Start the round now if a whole pass of the loop brought no writer and none is expected."""
        self._checking = False
        if self._scheduled is None:
            return  # the round started already
        if self._asked != asked:
            self._checking = True  # writers came during that pass: give the loop another one
            asyncio.get_running_loop().call_soon(self._check, self._asked)
        elif not self._expected:
            self._start()
        # else: the next writer to come looks again; `LINGER` bounds the wait

    def _start(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        batch, self._waiting, self._asked = self._waiting, {}, 0
        self.rounds += 1
        if time.monotonic() < self._threaded_until:
            try:
                work = asyncio.get_running_loop().run_in_executor(None, _fsync_all, list(batch))
            except RuntimeError:  # the loop's executor is shutting down: sync right here
                pass
            else:
                work.add_done_callback(lambda done: self._finish(batch, _errors_of(done, batch)))
                return
        started = time.monotonic()
        errors = _fsync_all(list(batch))
        if time.monotonic() - started > self.SLOW:
            self._threaded_until = time.monotonic() + self.BACK_OFF
        self._finish(batch, errors)

    def _finish(self, batch: dict[int, list[asyncio.Future[None]]], errors: dict[int, OSError]) -> None:
        for key, futures in batch.items():
            for waiter in futures:
                if waiter.done():
                    continue
                if key in errors:
                    waiter.set_exception(errors[key])
                else:
                    waiter.set_result(None)
        if self._waiting:  # writers who came while a threaded round ran
            self._scheduled = asyncio.get_running_loop().call_soon(self._start)
        else:
            self._busy = False


def _errors_of(done: asyncio.Future[dict[int, OSError]], batch: Iterable[int]) -> dict[int, OSError]:
    """A threaded round's errors; if the round itself could not run, one for every descriptor."""
    if done.cancelled():
        return dict.fromkeys(batch, OSError("the fsync round was cancelled"))
    if (exc := done.exception()) is not None:
        return dict.fromkeys(batch, exc if isinstance(exc, OSError) else OSError(str(exc)))
    return done.result()


def _fsync_all(fds: list[int]) -> dict[int, OSError]:
    errors = {}
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as err:
            errors[fd] = err
    return errors


class Journal:
    """The batch's journal, open for appending; one instance, owned by the ledger."""

    def __init__(self, batch_dir: Path, syncer: Syncer | None = None) -> None:
        self.path = journal_path(batch_dir)
        files.ensure_dir(self.path.parent)
        self._fd = files.open_append(self.path)
        self._syncer = syncer or Syncer()
        self._torn = True  # a crash mid-write may have left a last line without its newline

    def _heal_torn_tail(self) -> None:
        """Start our lines on a fresh one, so none is glued onto a torn line (replay skips that)."""
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            files.write_all(self._fd, b"\n")
        self._torn = False

    def write(self, line: bytes, *, durable: bool = False) -> None:
        """Append one line; with `durable`, it is on disk (fsynced) before this returns.

        Written straight to the descriptor: a line the disk refuses is not kept in a
        buffer to reach the file later, behind lines written after it. Part of it may be
        there; the next line starts on a fresh one.
        """
        try:
            if self._torn:
                self._heal_torn_tail()
            files.write_all(self._fd, line)
            if durable:
                os.fsync(self._fd)
        except OSError as err:
            self._torn = True
            raise DiskError(str(self.path), err) from None

    def expecting(self) -> contextlib.AbstractContextManager[None]:
        """A line is on its way (a POST is out): the next fsync round waits for it, briefly."""
        return self._syncer.expecting()

    async def sync(self) -> None:
        """Return once every line written so far is on disk (grouped with other fsyncs)."""
        try:
            await self._syncer.sync(self._fd)
        except OSError as err:
            raise DiskError(str(self.path), err) from None

    def close(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            os.fsync(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = -1

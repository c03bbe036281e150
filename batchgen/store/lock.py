"""One `run` per batch folder: an flock on `.batchgen/lock`.

The kernel drops an flock when its process dies, so a lock left by a crash or a
SIGKILL never blocks the next run; the pid written inside is only for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..core.errors import LockedError
from . import files


class BatchLock:
    """An exclusive flock on `path` (in `.batchgen/` of a batch, or a delivery folder), held
    until released; `LockedError` names `what` is locked when another process holds it."""

    def __init__(self, path: Path, what: str = "batch", folder: Path | None = None) -> None:
        self.path = path
        self._what = what
        self._folder = folder or path.parent.parent  # the folder named in the message
        self._fd: int | None = None

    def acquire(self) -> None:
        files.ensure_dir(self.path.parent.parent)
        files.ensure_dir(self.path.parent)
        fd = files.open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            locked = self._held(fd)
            os.close(fd)
            raise locked from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def probe(self) -> None:
        """Raise `LockedError` now if another process holds the lock, taking nothing and creating
        nothing: a cron tick on a batch whose run is still going ends before it reads anything.
        Anything unusual (no lock file, a symlink) is left to `acquire` to meet."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._held(fd) from None
        except OSError:
            return
        finally:
            os.close(fd)  # also drops the shared lock, if it was taken

    def _held(self, fd: int) -> LockedError:
        """The error naming the process that holds the lock (its pid, written in the file)."""
        holder = os.read(fd, 32).decode(errors="replace").strip()
        return LockedError(str(self._folder), int(holder) if holder.isdigit() else None, self._what)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> BatchLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

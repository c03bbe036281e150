"""One `run` per batch folder: an flock on `.batchgen/lock`.

The kernel drops an flock when its process dies, so a lock left by a crash or a
SIGKILL never blocks the next run; the pid written inside is only for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from . import files
from .errors import LockedError


class BatchLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        files.ensure_dir(self.path.parent.parent)
        files.ensure_dir(self.path.parent)
        fd = files.open_lock(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise LockedError(str(self.path.parent.parent), int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

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

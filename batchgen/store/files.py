"""Files in the batch folder: created without following symlinks, replaced atomically.

Everything batchgen writes goes through here. A file is created with `O_CREAT | O_EXCL
| O_NOFOLLOW`, so a symlink planted under a name batchgen is about to use makes the
open fail instead of overwriting whatever the link points at; a file is replaced only
after `lstat` shows the old one is a regular file; folders batchgen makes are checked
to be real folders. Each refusal is an `UnsafeFileError` naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from ..core.errors import DiskError, UnsafeFileError

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def ensure_dir(path: Path) -> Path:
    """Make `path` (and its parents) and check that it is a folder, not a link to one."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        mode = os.lstat(path).st_mode
    except FileExistsError:
        raise UnsafeFileError(str(path), "exists and is not a folder") from None
    except OSError as err:
        raise DiskError(str(path), err) from None
    if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
        raise UnsafeFileError(str(path), "is a symlink or not a folder; batchgen writes only into real folders")
    return path


def _clear_stale(path: Path | str) -> None:
    """Remove what an earlier, interrupted write left under `path` (only a regular file)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise DiskError(str(path), err) from None
    if not stat.S_ISREG(mode):
        raise UnsafeFileError(str(path), "is a symlink or not a regular file; remove it and rerun")
    try:
        os.unlink(path)
    except OSError as err:
        raise DiskError(str(path), err) from None


def create(path: Path) -> BinaryIO:
    """A new file open for writing; a leftover regular file is replaced, a symlink refused."""
    return os.fdopen(create_fd(path), "wb")


def create_fd(path: Path | str) -> int:
    """`create` as a bare descriptor: for whole chunks, written with `write_all`, a Python
    buffer around it would only add the syscalls `open()` makes to set one up."""
    try:
        fd = os.open(path, _CREATE, 0o644)
    except FileExistsError:
        _clear_stale(path)  # what an interrupted write left: gone if a regular file, refused if not
        try:
            fd = os.open(path, _CREATE, 0o644)
        except OSError as err:
            raise _refusal(path, err) from None
    except OSError as err:
        raise _refusal(path, err) from None
    return fd


def close(fd: int, path: Path | str) -> None:
    """Close a descriptor from `create_fd`; an error (a network disk reports late ones here) names the file."""
    try:
        os.close(fd)
    except OSError as err:
        raise DiskError(str(path), err) from None


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (a short write is continued, as a buffered file would)."""
    written = os.write(fd, data)
    while written < len(data):
        more = os.write(fd, memoryview(data)[written:])
        if not more:  # a regular file takes something or raises; never spin on nothing
            raise OSError(errno.EIO, "the disk took no bytes")
        written += more


def open_append(path: Path) -> int:
    """An append-only descriptor on a regular file (the journal), never through a symlink.

    Bare, like `create_fd`: each line goes out whole in one `write_all`, and a Python
    buffer would only copy it once more before the same syscall."""
    return _open_checked(path, _APPEND)


def open_lock(path: Path) -> int:
    """A descriptor on the lock file, never through a symlink."""
    return _open_checked(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC)


def open_regular(path: Path) -> BinaryIO:
    """A regular file of the batch open for reading: never a symlink, a FIFO (`_READ` is
    non-blocking, so one cannot hold the open for ever) or a device."""
    return os.fdopen(_open_checked(path, _READ), "rb")


def _open_checked(path: Path, flags: int) -> int:
    """`os.open` that refuses, naming the path, anything but a regular file."""
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        raise _refusal(path, err) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFileError(str(path), "is not a regular file (a folder, a pipe or a device?)")
    return fd


def read_regular(path: Path, limit: int | None = None, *, follow: bool = False) -> bytes | None:
    """The bytes of a regular file; None when it does not exist.

    FIFOs, devices and folders are refused rather than read (a FIFO would block for
    ever, a device could be endless), and so are symlinks unless `follow` (the user's
    own input files may be links; batchgen's own files never are). `limit` bounds how
    much is read.
    """
    try:
        fd = os.open(path, _READ if not follow else _READ & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _refusal(path, err) from None
    info = os.fstat(fd)  # before fdopen, which refuses a folder with an error of its own
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        problem = (
            "is a folder, not a file" if stat.S_ISDIR(info.st_mode) else "is not a regular file (a pipe or a device?)"
        )
        raise UnsafeFileError(str(path), problem)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise UnsafeFileError(str(path), f"is larger than {limit:,} bytes")
        return data


def check_replaceable(final: Path | str) -> None:
    """Refuse to replace `final` unless it is absent or a regular file."""
    try:
        mode = os.lstat(final).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise DiskError(str(final), err) from None
    if not stat.S_ISREG(mode):
        raise UnsafeFileError(str(final), "is a symlink or not a regular file; batchgen will not replace it")


def replace(part: Path | str, final: Path | str) -> None:
    """Move a finished `part` into place under `final` (atomic on one filesystem)."""
    check_replaceable(final)
    try:
        os.replace(part, final)
    except OSError as err:
        raise DiskError(str(final), err) from None


def write_atomic(path: Path | str, data: bytes, *, durable: bool = True) -> None:
    """Write `data` so readers see the old file or the new one, never half of one."""
    part = os.fspath(path) + ".part"
    try:
        fd = create_fd(part)
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            close(fd, part)
        replace(part, path)
    except OSError as err:
        unlink_quietly(part)
        raise DiskError(str(path), err) from None
    except BaseException:
        unlink_quietly(part)
        raise


def sync_dir(folder: Path | str) -> None:
    """fsync a folder, so a file just renamed into it stays renamed after a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        raise DiskError(str(folder), err) from None


def write_json_atomic(path: Path, data: dict[str, Any], *, durable: bool = True) -> None:
    """`write_atomic` of a JSON document (indented, keys sorted, newline at the end)."""
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), durable=durable)


def sizes(folder: Path | str) -> dict[str, int]:
    """The regular files directly in `folder` and their sizes, in one listing; {} if it cannot be read.

    A symlink or a folder under a file's name is not a file here."""
    try:
        with os.scandir(folder) as entries:
            return {e.name: e.stat(follow_symlinks=False).st_size for e in entries if e.is_file(follow_symlinks=False)}
    except OSError:
        return {}


def unlink_quietly(path: Path | str) -> None:
    """Remove a regular file batchgen made, ignoring one that is already gone."""
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _refusal(path: Path | str, err: OSError) -> DiskError:
    if err.errno == errno.ELOOP:
        return UnsafeFileError(str(path), "is a symlink; batchgen never writes through one")
    if err.errno == errno.EEXIST:
        return UnsafeFileError(str(path), "appeared while batchgen was creating it")
    if err.errno in (errno.EISDIR, errno.ENOTDIR):
        return UnsafeFileError(str(path), "is a folder, or its folder is a file")
    return DiskError(str(path), err)

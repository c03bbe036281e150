"""The batch folder's file operations: complete files only, never through a symlink, never a hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchgen.core.errors import DiskError, UnsafeFileError
from batchgen.store import files


def test_write_atomic_replaces_whole_and_leaves_no_part(tmp_path: Path) -> None:
    """The old content or the new one, never a mix, and no `.part` left behind."""
    path = tmp_path / "a.json"
    files.write_atomic(path, b"old")
    files.write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_symlink_is_never_written_through(tmp_path: Path) -> None:
    """A symlink planted under a name batchgen writes is refused, naming it; its target is untouched."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (tmp_path / "a.json").symlink_to(outside)
    with pytest.raises(DiskError, match=r"a\.json"):
        files.write_atomic(tmp_path / "a.json", b"x")
    with pytest.raises(UnsafeFileError):
        files.open_append(tmp_path / "a.json")
    assert outside.read_bytes() == b"keep"


def test_read_regular_answers_none_for_nothing_and_refuses_a_pipe(tmp_path: Path) -> None:
    """A missing file reads as None; a FIFO is refused at once (a plain open would block for ever);
    a file past the limit is refused."""
    assert files.read_regular(tmp_path / "none") is None
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        files.read_regular(tmp_path / "pipe")
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(DiskError):
        files.read_regular(tmp_path / "big", 10)

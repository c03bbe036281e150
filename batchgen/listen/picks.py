"""Picks, rejects and notes: what the listener decided about each take.

`batchgen serve` changes them; the static page shows them; `deliver` takes the picked
takes. They live in `output/<batch>/picks.json`, written whole and atomically after
every change, never through a symlink. Two `serve` processes may share a batch: every
change is made under an exclusive lock on `.batchgen/picks.lock`, to the file as read
again under that lock (`update`), so an acknowledged mark is never lost to the other's
next write. A mark remembers the take's digest and file
sha256: when a rerun makes the take again, the pick or reject no longer describes
what is on disk, so it is dropped and the note says why.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from ..core import text
from ..core.errors import BatchgenError, quote
from ..store import files
from ..store.layout import Layout

VERSION = 1
MAX_NOTE = 2000  # characters; a note is a line or two, not a document
MAX_BYTES = 16 * 1024 * 1024  # picks.json larger than this is not ours
STATES = ("picked", "rejected")
ACTIONS = ("pick", "reject", "clear", "note")
DROPPED = "pick dropped: the take was made again since"
LOCK_WAIT = 5.0  # seconds to wait for the other process's write before giving up
T = TypeVar("T")


class PicksError(BatchgenError):
    """picks.json cannot be read."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Made:
    """A done take as the journal has it: what a mark is checked against."""

    track: str
    digest: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Mark:
    """One take's mark: picked, rejected or neither, and a note."""

    track: str
    state: str | None = None  # "picked", "rejected" or None
    note: str = ""
    digest: str = ""  # the take's digest and file sha256 when it was marked
    sha256: str = ""
    at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "state": self.state,
            "note": self.note,
            "digest": self.digest,
            "sha256": self.sha256,
            "at": round(self.at, 3),
        }


@dataclass(slots=True)
class Picks:
    """Every take's mark in a batch (takes never marked are absent)."""

    batch: str
    marks: dict[str, Mark] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def picked(self) -> list[str]:
        return sorted(name for name, mark in self.marks.items() if mark.state == "picked")

    def as_json(self) -> dict[str, Any]:
        takes = {name: mark.as_dict() for name, mark in sorted(self.marks.items())}
        return {"batch": self.batch, "version": VERSION, "takes": takes}


def change(
    picks: Picks, name: str, made: Made, action: str, note: str | None = None, *, multi: bool = False, now: float = 0.0
) -> list[str]:
    """Apply one action to take `name`; returns the names whose marks changed.

    Picking a take un-picks the other takes of its track unless `multi`; pick and
    reject exclude each other; `clear` removes both; `note` only sets the note.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    old = picks.marks.get(name) or Mark(made.track)
    new = replace(old, track=made.track, digest=made.digest, sha256=made.sha256, at=now)
    if action == "note":
        new = replace(new, note=clean_note(note or ""))
    else:
        new = replace(new, state={"pick": "picked", "reject": "rejected"}.get(action))
    changed = [name] if new != old else []
    picks.marks[name] = new
    if action == "pick" and not multi:
        for other, mark in list(picks.marks.items()):
            if other != name and mark.track == made.track and mark.state == "picked":
                picks.marks[other] = replace(mark, state=None, at=now)
                changed.append(other)
    return changed


def reconcile(picks: Picks, made: Mapping[str, Made]) -> list[str]:
    """Drop the pick or reject of every take made again since it was marked; returns them."""
    dropped = []
    for name, mark in picks.marks.items():
        now = made.get(name)
        if mark.state is None or now is None or (now.digest, now.sha256) == (mark.digest, mark.sha256):
            continue
        why = f"{DROPPED} it was {mark.state}"
        note = f"{mark.note} ({why})" if mark.note else f"({why})"
        picks.marks[name] = replace(mark, state=None, note=clean_note(note), digest=now.digest, sha256=now.sha256)
        dropped.append(name)
    return dropped


def clean_note(text: str) -> str:
    """A note as kept: control characters out, at most MAX_NOTE characters."""
    kept = "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in text)
    return kept.strip()[:MAX_NOTE]


def load(folder: Path, batch: str) -> Picks:
    """The batch's picks (none when the file does not exist); a bad entry is skipped with a warning."""
    path = Layout(folder).picks
    try:
        data = files.read_regular(path, MAX_BYTES)
    except BatchgenError as err:
        raise PicksError(str(err)) from None
    picks = Picks(batch)
    if data is None:
        return picks
    try:
        doc = text.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        why = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:80]
        raise PicksError(f"{path}: not JSON ({why}); move it away to start afresh") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("takes"), dict):
        raise PicksError(f"{path}: expected an object with 'takes'; move it away to start afresh")
    if doc.get("batch") not in (None, batch):
        raise PicksError(f"{path}: picks of batch {quote(doc.get('batch'))}, not {quote(batch)}")
    for name, entry in doc["takes"].items():
        mark = _mark(entry)
        if mark is None:
            picks.warnings.append(f"{path}: take {quote(name)}: unreadable mark skipped")
        else:
            picks.marks[name] = mark
    return picks


def _mark(entry: object) -> Mark | None:
    if not isinstance(entry, dict):
        return None
    track, state, note = entry.get("track"), entry.get("state"), entry.get("note", "")
    digest, sha, at = entry.get("digest", ""), entry.get("sha256", ""), entry.get("at", 0.0)
    if not isinstance(track, str) or state not in (None, *STATES) or not isinstance(note, str):
        return None
    if not isinstance(digest, str) or not isinstance(sha, str):
        return None
    if isinstance(at, bool) or not isinstance(at, int | float):
        return None
    return Mark(track, state, clean_note(note), digest, sha, float(at))


def update(folder: Path, batch: str, apply: Callable[[Picks], T]) -> tuple[Picks, T]:
    """Re-read picks.json under the batch's picks lock, `apply` a change, save it if anything
    changed, and return the picks as saved with what `apply` answered."""
    path = Layout(folder).picks_lock
    files.ensure_dir(path.parent)
    fd = files.open_lock(path)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PicksError(f"{path}: held by another process for over {LOCK_WAIT:g} s") from None
                time.sleep(0.005)  # the holder writes one small file: milliseconds
        picks = load(folder, batch)
        before = picks.as_json()
        answer = apply(picks)
        if picks.as_json() != before:
            save(folder, picks)
        return picks, answer
    finally:
        os.close(fd)  # closing drops the lock


def save(folder: Path, picks: Picks) -> None:
    """Write picks.json whole and atomically (a crash leaves the old one or the new one)."""
    data = json.dumps(picks.as_json(), indent=1, ensure_ascii=False).encode() + b"\n"
    files.ensure_dir(folder)
    files.write_atomic(Layout(folder).picks, data, durable=True)  # DiskError names the path


__all__ = ["ACTIONS", "Made", "Mark", "Picks", "PicksError", "change", "load", "reconcile", "save", "update"]

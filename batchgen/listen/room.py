"""The live listening room's model: the batch's takes as page fragments, their marks, revisions.

`batchgen serve` shows the same page as `index.html` and keeps it current while a run
goes on. This module holds what the page shows and what changed since a revision the
page has; `serve.py` puts it on HTTP. Reading the batch (journal replay, waveforms) is
`read`, which is safe in a worker thread; `take` and `mark` change the room and run on
the event loop only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import BatchgenError
from ..manifest.parse import Manifest, expand_as_recorded
from ..store.journal import journal_path
from ..store.ledger import Ledger
from .picks import ACTIONS, MAX_NOTE, Made, Picks, change, reconcile, update
from .picks import load as load_picks
from .report import Entry, Live, Waves, collect, problems, render, summary, take_html

Signature = tuple[int, int, int] | None  # the journal's inode, size and mtime: changed when it grew


class MarkRefused(BatchgenError):
    """A mark the room will not make (unknown take, not done yet, bad request)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Snapshot:
    """The batch as read at one moment: its takes and the page pieces made from them."""

    signature: Signature
    entries: list[Entry]
    fragments: dict[str, str]
    summary: str
    problems: str
    warnings: list[str] = field(default_factory=list)


class Room:
    """What the page shows, with a revision number for every take and mark."""

    def __init__(self, manifest: Manifest, out: Path, *, multi: bool = False) -> None:
        self.manifest = manifest
        self.folder = out / manifest.batch
        self.multi = multi
        self.picks: Picks = load_picks(self.folder, manifest.batch)
        self.rev = 0
        self.warnings: list[str] = list(self.picks.warnings)
        self._waves: Waves = {}
        self._snapshot = Snapshot(None, [], {}, "", "")
        self._by_name: dict[str, Entry] = {}
        self._take_revs: dict[str, int] = {}
        self._mark_revs: dict[str, int] = {}
        self._header_rev = 0

    def changed(self) -> bool:
        """Has the journal changed since the room last read it? (a stat, no reading)."""
        return _signature(journal_path(self.folder)) != self._snapshot.signature or not self._snapshot.entries

    def read(self) -> Snapshot:
        """Read the batch now: journal, task states, waveforms (cached by file version), fragments.

        Only reads; safe in a worker thread while the loop serves the previous snapshot.
        """
        signature = _signature(journal_path(self.folder))
        ledger = Ledger.read(self.folder, self.manifest.batch)
        tasks = expand_as_recorded(self.manifest, ledger.base_seed)
        entries = collect(tasks, ledger, self.folder, self._waves)
        fragments = {x.task.name: take_html(x, None, live=True) for x in entries}
        return Snapshot(signature, entries, fragments, summary(entries), problems(entries), list(ledger.warnings))

    def take(self, snapshot: Snapshot) -> None:
        """Make `snapshot` what the room shows; takes whose fragment changed get a new revision,
        and a pick whose take was made again since is dropped (and saved so)."""
        old = self._snapshot
        for name, fragment in snapshot.fragments.items():
            if old.fragments.get(name) != fragment:
                self.rev += 1
                self._take_revs[name] = self.rev
        if (snapshot.summary, snapshot.problems) != (old.summary, old.problems):
            self.rev += 1
            self._header_rev = self.rev
        self._snapshot = snapshot
        self._by_name = {x.task.name: x for x in snapshot.entries}
        self.warnings = [*self.picks.warnings, *snapshot.warnings]
        made = {x.task.name: x.made for x in snapshot.entries if x.made is not None}
        self._update(lambda picks: reconcile(picks, made))

    def page(self, token: str) -> str:
        """The whole page, live: it carries the token its write actions need and its revision."""
        return render(self.manifest.batch, self._snapshot.entries, self.picks, Live(token, self.rev))

    def state(self, since: int) -> dict[str, Any]:
        """What changed after revision `since`: take fragments, marks, the summary and the problems."""
        snap = self._snapshot
        takes = {name: snap.fragments[name] for name, rev in self._take_revs.items() if rev > since}
        # A fragment carries no marks: a take whose fragment is swapped in gets its marks too,
        # or a note made while it was pending would show empty (and typing would replace it).
        marked = {name for name, rev in self._mark_revs.items() if rev > since} | takes.keys()
        out: dict[str, Any] = {
            "rev": self.rev,
            "takes": takes,
            "marks": {name: _mark_json(self.picks, name) for name in sorted(marked)},
        }
        if self._header_rev > since:
            out["summary"], out["problems"] = snap.summary, snap.problems
        return out

    def mark(self, request: Mapping[str, Any], now: float) -> dict[str, Any]:
        """Apply a pick, reject, clear or note from the page; saves picks.json before answering."""
        take, action, note = request.get("take"), request.get("action"), request.get("note")
        if not isinstance(take, str) or action not in ACTIONS:
            raise MarkRefused(400, f"expected take and one of {', '.join(ACTIONS)}")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE * 4):
            raise MarkRefused(400, f"a note is text of at most {MAX_NOTE} characters")
        entry = self._by_name.get(take)
        if entry is None:
            raise MarkRefused(404, f"no take {take[:80]!r} in this batch")
        if action in ("pick", "reject") and entry.made is None:
            raise MarkRefused(409, f"{take} is not done yet: it can be picked or rejected once it is")
        made = entry.made or Made(entry.task.track, "", "")
        changed = self._update(lambda picks: change(picks, take, made, str(action), note, multi=self.multi, now=now))
        return {"rev": self.rev, "marks": {name: _mark_json(self.picks, name) for name in [take, *changed]}}

    def _update(self, apply: Callable[[Picks], list[str]]) -> list[str]:
        """Change picks.json as it is on disk now (another `serve` may have marked takes since we
        read it) and show every mark that differs from what the page had, ours and theirs."""
        old = self.picks.marks
        self.picks, changed = update(self.folder, self.manifest.batch, apply)
        differ = {n for n in old.keys() | self.picks.marks.keys() if old.get(n) != self.picks.marks.get(n)}
        self._bump_marks(sorted(differ))
        return changed

    def files(self) -> set[str]:
        """The file names the page may play: the done takes' files."""
        return {f for x in self._snapshot.entries if x.file for f in (x.file, *x.extra_files)}

    def _bump_marks(self, names: list[str]) -> None:
        for name in names:
            self.rev += 1
            self._mark_revs[name] = self.rev


def _mark_json(picks: Picks, name: str) -> dict[str, Any]:
    mark = picks.marks.get(name)
    return {"state": mark.state if mark else None, "note": mark.note if mark else ""}


def _signature(path: Path) -> Signature:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


__all__ = ["MarkRefused", "Room", "Snapshot"]

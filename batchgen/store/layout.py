"""The batch folder's layout: every name batchgen reads or writes inside it, given once.

    output/<batch>/
      <task>.wav, <task>.json   a take's audio and its sidecar
      index.html                the listening page
      picks.json                picks, rejects and notes from `serve`
      .batchgen/state.jsonl     the journal
      .batchgen/lock            held by a running `run`
      .batchgen/picks.lock      held while picks.json changes
      .batchgen/prices.json     dry-run prices by shape
      .batchgen/finished.json   a finished batch's answer, and what it rests on (a cron tick reads it)
      .batchgen/models/         the schema of each model the batch uses: <model id>.json
      .batchgen/hops/           the hop files of long tracks and loops: <task>.h<k>.<ext>

Paths are built here and nowhere else; what is written at them (atomically, never
through a symlink) is `files`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".batchgen"


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one batch folder."""

    folder: Path

    @property
    def journal(self) -> Path:
        return self.folder / STATE_DIR / "state.jsonl"

    @property
    def lock(self) -> Path:
        return self.folder / STATE_DIR / "lock"

    @property
    def finished(self) -> Path:
        return self.folder / STATE_DIR / "finished.json"

    @property
    def prices(self) -> Path:
        return self.folder / STATE_DIR / "prices.json"

    @property
    def picks(self) -> Path:
        return self.folder / "picks.json"

    @property
    def picks_lock(self) -> Path:
        return self.folder / STATE_DIR / "picks.lock"

    @property
    def hops(self) -> Path:
        return self.folder / STATE_DIR / "hops"

    @property
    def page(self) -> Path:
        return self.folder / "index.html"

    @property
    def models(self) -> Path:
        return self.folder / STATE_DIR / "models"

    def model(self, model_id: str) -> Path:
        """The schema a batch recorded for `model_id` (a safe id: checked by the caller)."""
        return self.models / f"{model_id}.json"

    def hop(self, task: str, hop: int) -> Path:
        """Where hop `hop` (0-based) of a chained task lands, before its extension."""
        return self.hops / f"{task}.h{hop + 1}"

    def audio(self, task: str, ext: str = ".wav") -> Path:
        return self.folder / f"{task}{ext}"

    def sidecar(self, task: str) -> Path:
        return self.folder / f"{task}.json"


__all__ = ["STATE_DIR", "Layout"]

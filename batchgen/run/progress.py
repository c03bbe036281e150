"""What the user sees while a run goes: a live line on a TTY, log lines for cron, JSON.

The runner calls `event` for things worth a line (a task done or failed, a cooldown)
and `tick` with the counters; this module decides how they look. It writes to stderr,
so stdout keeps only the final summary.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO


@dataclass(slots=True)
class Counts:
    """The run's counters, owned by the runner and shown by the reporter."""

    total: int = 0
    skipped: int = 0  # done before this run
    queued: int = 0
    submitting: int = 0
    running: int = 0
    downloading: int = 0
    done: int = 0
    failed: int = 0
    spent: float = 0.0  # creative units of jobs that succeeded in this run
    committed: float = 0.0  # creative units quoted for jobs still running
    hops: int = 0  # jobs the run's chained tracks need in all (0: no chained track)
    hops_made: int = 0  # of those, hops whose audio is made


class Reporter:
    """Formats run progress for a terminal, a log file, or a JSON log pipeline."""

    def __init__(self, fmt: str = "text", quiet: bool = False, stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = fmt == "text" and not quiet and self.stream.isatty()
        self._started = time.monotonic()
        self._last_summary = 0.0
        self._line_shown = False
        self.summary_every = 30.0

    def event(self, kind: str, task: str | None = None, *, error: bool = False, **fields: Any) -> None:
        """One thing that happened; errors are shown even with --quiet."""
        if self.quiet and not error:
            return
        if self.fmt == "json":
            self._write(json.dumps({"t": round(time.time(), 3), "ev": kind, "task": task, **fields}))
            return
        detail = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None)
        who = f" {task}" if task else ""
        self._write(f"{time.strftime('%H:%M:%S')} {kind}{who}{' ' + detail if detail else ''}")

    def tick(self, counts: Counts, force: bool = False) -> None:
        """Refresh the live line (TTY) or print a periodic summary line (logs)."""
        if self.quiet:
            return
        now = time.monotonic()
        if self.live:
            self._live(self._progress_text(counts, now))
            return
        if force or now - self._last_summary >= self.summary_every:
            self._last_summary = now
            if self.fmt == "json":
                self._write(json.dumps({"t": round(time.time(), 3), "ev": "progress", **asdict(counts)}))
            else:
                self._write(f"{time.strftime('%H:%M:%S')} progress {self._progress_text(counts, now)}")

    def _progress_text(self, c: Counts, now: float) -> str:
        elapsed = now - self._started
        finished = c.done + c.failed
        work = c.total - c.skipped
        rate = finished / elapsed if elapsed > 0 else 0.0
        eta = f"{(work - finished) / rate:.0f}s" if rate > 0 and work > finished else "-"
        hops = f" | hops {c.hops_made}/{c.hops}" if c.hops else ""
        return (
            f"{c.done + c.skipped}/{c.total} done, {c.failed} failed{hops} | queued {c.queued}, "
            f"submitting {c.submitting}, running {c.running}, downloading {c.downloading} | "
            f"{rate:.1f}/s, ETA {eta} | {c.spent:g} CU"
        )

    def _live(self, text: str) -> None:
        # Never wider than the terminal: a wrapped line cannot be redrawn with \r.
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        self.stream.write("\r" + text[:width] + "\x1b[K")
        self.stream.flush()
        self._line_shown = True

    def _write(self, line: str) -> None:
        if self._line_shown:
            self.stream.write("\r\x1b[K")
            self._line_shown = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._line_shown:
            self.stream.write("\n")
            self._line_shown = False
        self.stream.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    text = str(value)
    return json.dumps(text) if " " in text else text

"""Why a run submits nothing more: one state, moved only forward.

A run is `RUNNING` until something stops its submitting. What it then still finishes
depends on why, and a later, graver reason wins over an earlier one: the API asked to
come back after `--max-wait` (`HELD_OFF`: running jobs are followed and downloaded, the
rest left new); a signal (`SIGNAL`: the POSTs and downloads under way finish, within the
grace period); a write failed (`DISK`: running jobs are followed and their results
journaled, nothing more is written, whatever came before).
"""

from __future__ import annotations

from enum import IntEnum


class Halt(IntEnum):
    """The run's halt state; a larger value is a graver reason."""

    RUNNING = 0
    HELD_OFF = 1
    SIGNAL = 2
    DISK = 3

    @property
    def leaving(self) -> bool:
        """Held off, nothing graver: the tasks not submitted are left, new, for the next run."""
        return self is Halt.HELD_OFF

    @property
    def stopping(self) -> bool:
        """A signal or a disk error: the run ends as soon as what must finish has."""
        return self >= Halt.SIGNAL


__all__ = ["Halt"]

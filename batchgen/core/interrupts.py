"""Whether SIGINT or SIGTERM has arrived, kept where no handler's exception can lose it.

A signal handler that raises can land inside a callback whose exceptions Python only
prints and drops (importlib's module-lock clean-up during a lazy import, a finalizer):
the signal would be lost and the run would go on to the end. The handlers mark the
signal here first; the run's own signal handling and the CLI's exit look at the mark.
"""

from __future__ import annotations

_marked: list[int] = []


def mark(signum: int) -> None:
    _marked.append(signum)


def pending() -> bool:
    return bool(_marked)


def clear() -> None:
    _marked.clear()


__all__ = ["clear", "mark", "pending"]

"""SIGINT and SIGTERM: a stop always stops, at once where nothing is owed, gracefully where it is.

A run is a sequence of phases. Before anything is submitted (uploads, reconciliation,
the estimate) a signal cancels the phase at once: nothing is half done that the
journal does not already say. While jobs are being submitted and downloaded, the first
signal stops new submissions and lets the POSTs and downloads under way finish, for at
most the grace period; a second signal, or the end of the grace period, cancels
everything. Either way the phase ends with `Interrupted`, and the CLI exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ..core import interrupts

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run was stopped by a signal; the journal is consistent."""


class Stop:
    """Signal handling for one run; `run(coro)` executes a phase under it."""

    def __init__(self, grace: float, on_stop: Callable[[bool], None] | None = None) -> None:
        self.grace = grace
        self.requested = False
        self._on_stop = on_stop  # told of each signal: False for the first, True for the second
        self._phase: asyncio.Task[Any] | None = None
        self._graceful = False
        self._timer: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def signals(self) -> Iterator[Stop]:
        """Handle SIGINT and SIGTERM in the running loop; restore the previous handlers after."""
        loop = asyncio.get_running_loop()
        previous: dict[signal.Signals, Any] = {}
        for sig in SIGNALS:
            try:
                old = signal.getsignal(sig)
                loop.add_signal_handler(sig, self.signal)
                previous[sig] = old
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests) or not supported: default handling
        if interrupts.pending():
            self.signal()  # one arrived before these handlers, and its exception was lost on the way
        try:
            yield self
        finally:
            for sig, old in previous.items():
                loop.remove_signal_handler(sig)
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, old)
            if self._timer is not None:
                self._timer.cancel()

    def signal(self) -> None:
        """A signal arrived (also callable directly, as tests do)."""
        second = self.requested
        self.requested = True
        if self._on_stop is not None:
            self._on_stop(second)
        if second or not self._graceful:
            self._cancel_phase()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.grace, self._cancel_phase)

    def _cancel_phase(self) -> None:
        if self._phase is not None and not self._phase.done():
            self._phase.cancel()

    async def run(self, phase: Coroutine[Any, Any, T], *, graceful: bool = False) -> T:
        """Run one phase; a signal cancels it (at once, or after the grace period when graceful)."""
        if self.requested:
            phase.close()
            raise Interrupted
        task = asyncio.ensure_future(phase)
        self._phase, self._graceful = task, graceful
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.requested and task.cancelled() and (current is None or not current.cancelling()):
                raise Interrupted from None
            raise
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._phase = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

"""What the commands share: one asyncio.run safe against signals, a client for the API or the
simulator, a batch read from its folder, exit codes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..core import text
from ..core.errors import UsageError
from ..core.task import Task
from ..manifest.parse import Manifest, expand_as_recorded, load
from ..store.ledger import Ledger

T = TypeVar("T")


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run`, safe against a signal at any moment of its start.

    The loop is built with SIGINT and SIGTERM held back (one landing half-way through
    its construction leaves a half-made loop whose finaliser prints a traceback), and a
    coroutine the signal kept from starting is closed, not left "never awaited".
    """
    import asyncio

    def new_loop() -> asyncio.AbstractEventLoop:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        loop: asyncio.AbstractEventLoop | None = None
        try:
            loop = asyncio.new_event_loop()
        finally:
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held back is delivered here
            except BaseException:
                # ... and raises right here: the loop never reaches the Runner, so close it
                # now rather than leave it to a finaliser (which, inside a garbage cycle,
                # may find its sockets already gone and print a traceback).
                if loop is not None:
                    loop.close()
                raise
        return loop

    coro = None
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            coro = make()
            return runner.run(coro)
    finally:
        if coro is not None:
            coro.close()  # a no-op once it ran; stops the warning when it never did


def _load(args: Any) -> Manifest:
    """The manifest named on the command line, checked against the schemas its batch recorded."""
    from ..run.models import BatchSchemas

    return load(args.manifest, BatchSchemas(Path(args.out)))


def _read_batch(manifest: Manifest, out: str) -> tuple[list[Task], Ledger]:
    """The batch's tasks, as its journal's recorded seed makes them, and its ledger (read-only)."""
    ledger = Ledger.read(Path(out) / manifest.batch, manifest.batch)
    return expand_as_recorded(manifest, ledger.base_seed), ledger


async def _with_client(use: Any, *, simulate: bool, connections: int = 32, project: str | None = None) -> Any:
    """Call `use(client)` with a client for the real API, or for an in-process simulator.

    The manifest's `project:` wins over SCENARIO_PROJECT_ID; every request carries it.
    """
    import os

    from ..scenario.auth import Credentials
    from ..scenario.client import ScenarioClient

    project = project or os.environ.get("SCENARIO_PROJECT_ID") or None
    if project is not None and (not project.isprintable() or project != text.clean(project)):
        raise UsageError("SCENARIO_PROJECT_ID holds characters no request can carry")
    if not simulate:
        async with ScenarioClient.from_env(max_connections=connections, project=project) as client:
            return await use(client)
    from ..simulator import Simulator, serve, throwaway_credentials
    from .args import _env_number  # parsing owns the number checks; args imports this module

    key, secret = throwaway_credentials()
    job_time = _env_number("BATCHGEN_SIMULATE_JOB_TIME", 2.0, most=3600.0)
    async with (
        serve(Simulator(key=key, secret=secret, job_time=job_time)) as url,
        ScenarioClient(url, Credentials(key, secret), max_connections=connections, project=project) as client,
    ):
        return await use(client)

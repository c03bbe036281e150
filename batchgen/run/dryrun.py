"""The one way a batch is priced: a dry run per price shape, through the run's own gate.

`run` (before it submits, and when `--max-cost` reserves a task) and `plan --cost` both
price with `dry_runner`: the same body (`pricing_body`), the same admission gate (a dry
run counts against the rate like a submission, and a 429 pauses every submitter), the
same retries, and the same rule for a hint past `--max-wait` (not in this run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from ..core.retry import Backoff, retry_call
from ..core.task import Task
from ..scenario.client import ScenarioClient
from ..scenario.limits import Admission
from ..store.cost import pricing_body

DryRun = Callable[[Task, int], Awaitable[float]]


def dry_runner(
    client: ScenarioClient,
    gate: Admission,
    policy: Backoff,
    uploads: Mapping[str, str],
    observe: Callable[[BaseException], object],
) -> DryRun:
    """A function that prices hop `hop` (0-based) of a task with one dry run."""

    async def price(task: Task, hop: int) -> float:
        body = pricing_body(task, hop, uploads.get(task.audio_sha256 or "") if hop == 0 else None, uploads)

        async def once() -> float:
            async with gate.slot() as slot:
                return await client.estimate(task.model, body, departed=slot.departed)

        return await retry_call(policy, once, observe=observe, hold_off=True)

    return price


__all__ = ["DryRun", "dry_runner"]

"""Money: price tasks with the API's dry run, cap what a batch may spend, count what it did.

Tasks that differ only in prompt or seed cost the same, so prices are asked once per
*shape* (every parameter but those two) and cached, in memory and in
`.batchgen/prices.json` so `status` can estimate what remains without the network.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .download import write_json_atomic
from .state import STATE_DIR
from .task import Task, canonical

PRICES = "prices.json"
_FREE_OF_CHARGE = ("prompt", "seed")  # the price does not depend on these


def shape(task: Task) -> str:
    """The part of a task that decides its price: model and every parameter but prompt and seed."""
    params = {k: v for k, v in task.params.items() if k not in _FREE_OF_CHARGE}
    if task.audio_sha256:
        params["inputAudio"] = f"sha256:{task.audio_sha256}"
    return canonical({"model": task.model, "params": params})


def pricing_body(task: Task, asset_id: str | None) -> dict[str, object]:
    """What to send to the dry run for a task.

    A local inputAudio not uploaded yet is left out, with the fields that need it: the
    price is the generation's, and `plan` must not upload files.
    """
    if task.input_audio is None or asset_id is not None:
        return task.body(asset_id)
    body = {k: v for k, v in task.params.items() if k not in ("inputAudio", "continuation")}
    body.pop("continuationStart", None)
    body.pop("continuationEnd", None)
    return body


def load_prices(batch_dir: Path) -> dict[str, float]:
    try:
        data = json.loads((batch_dir / STATE_DIR / PRICES).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_prices(batch_dir: Path, prices: Mapping[str, float]) -> None:
    (batch_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(batch_dir / STATE_DIR / PRICES, dict(prices))


class Pricer:
    """Prices tasks through `ask` (a dry run), once per shape."""

    def __init__(self, ask: Callable[[Task], Awaitable[float]], known: Mapping[str, float] | None = None) -> None:
        self._ask = ask
        self.prices: dict[str, float] = dict(known or {})
        self.asked = 0

    async def price(self, task: Task) -> float:
        key = shape(task)
        if key not in self.prices:
            self.prices[key] = await self._ask(task)
            self.asked += 1
        return self.prices[key]

    async def total(self, tasks: Iterable[Task]) -> tuple[float, dict[str, float]]:
        """Sum and per-track sums for `tasks`."""
        per_track: dict[str, float] = {}
        for task in tasks:
            cost = await self.price(task)
            per_track[task.track] = per_track.get(task.track, 0.0) + cost
        return sum(per_track.values()), per_track

    def known(self, task: Task) -> float | None:
        return self.prices.get(shape(task))


@dataclass(slots=True)
class Budget:
    """Creative units spent and committed against an optional cap, for one batch.

    `spent` counts jobs that succeeded (in earlier runs too); `held` the jobs still
    running, at the API's quote (or our estimate until the POST answers). Failed jobs
    are refunded, so their hold is simply dropped.
    """

    cap: float | None = None
    spent: float = 0.0
    held: dict[str, float] = field(default_factory=dict)
    left_out: int = 0  # submissions refused for lack of budget

    @property
    def committed(self) -> float:
        return sum(self.held.values())

    def reserve(self, task: str, estimate: float) -> bool:
        """Hold `estimate` for a task about to be submitted; False when it would pass the cap."""
        if self.cap is not None and self.spent + self.committed + estimate > self.cap + 1e-9:
            self.left_out += 1
            return False
        self.held[task] = estimate
        return True

    def quote(self, task: str, cost: float | None) -> None:
        """The API quoted the job's cost: hold that instead of our estimate."""
        if cost is not None and task in self.held:
            self.held[task] = cost

    def settle(self, task: str, cost: float | None) -> float:
        """The job succeeded: its actual cost (or the held quote) is spent."""
        held = self.held.pop(task, 0.0)
        actual = held if cost is None else cost
        self.spent += actual
        return actual

    def release(self, task: str) -> None:
        """The job failed (refunded) or was never sent."""
        self.held.pop(task, None)

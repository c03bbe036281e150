"""Money: price jobs with the API's dry run, hold a batch to a cap, never count a credit twice.

Jobs that differ only in prompt or seed cost the same, so prices are asked once per
*shape* (every parameter but those two) and cached, in memory and in
`.batchgen/prices.json` so `status` can estimate what remains without the network. A
chained track is priced hop by hop (its middle hops share one shape).

What was spent is the ledger's figure (from the journal); the `Budget` only holds what
submissions in progress may still cost, so the cap covers spent + held + the next job.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..core import text
from ..core.state import STATE_DIR
from ..core.task import Task, canonical
from . import files

PRICES = "prices.json"
MAX_PRICES_BYTES = 16 * 1024 * 1024
_FREE_OF_CHARGE = ("prompt", "seed")  # the price does not depend on these
_CONTINUATION = ("inputAudio", "continuation", "continuationStart", "continuationEnd")


def pricing_body(task: Task, hop: int, asset_id: str | None) -> dict[str, object]:
    """What to send to the dry run for hop `hop` of a task.

    Input audio that does not exist yet on the API (a local file not uploaded, a
    previous hop not made) is left out, with the fields that need it: the price is the
    generation's, and pricing must not upload or generate anything.
    """
    body = task.hop_body(hop, asset_id)
    if asset_id is None or hop > 0:
        for key in _CONTINUATION:
            body.pop(key, None)
    return body


def shape(task: Task, hop: int = 0) -> str:
    """The part of a job that decides its price: model and every parameter but prompt and seed."""
    params = {k: v for k, v in pricing_body(task, hop, None).items() if k not in _FREE_OF_CHARGE}
    if hop == 0 and task.audio_sha256:
        params["inputAudio"] = f"sha256:{task.audio_sha256}"
    return canonical({"model": task.model, "params": params})


def load_prices(batch_dir: Path) -> dict[str, float]:
    """The cached prices; a damaged or hostile cache is simply not used."""
    try:
        data = text.loads(files.read_regular(batch_dir / STATE_DIR / PRICES, MAX_PRICES_BYTES) or b"{}")
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    }


def save_prices(batch_dir: Path, prices: Mapping[str, float]) -> None:
    files.ensure_dir(batch_dir / STATE_DIR)
    files.write_json_atomic(batch_dir / STATE_DIR / PRICES, dict(prices), durable=False)


class Pricer:
    """Prices jobs through `ask` (a dry run of one hop), once per shape."""

    def __init__(self, ask: Callable[[Task, int], Awaitable[float]], known: Mapping[str, float] | None = None) -> None:
        self._ask = ask
        self.prices: dict[str, float] = dict(known or {})
        self.asked = 0
        self._shapes: dict[tuple[str, str, int], str] = {}

    def shape(self, task: Task, hop: int = 0) -> str:
        """`shape`, remembered per task and hop (it is asked for again at every submission)."""
        key = (task.name, task.digest, hop)
        if (found := self._shapes.get(key)) is None:
            found = self._shapes[key] = shape(task, hop)
        return found

    async def price(self, task: Task, hop: int = 0) -> float:
        key = self.shape(task, hop)
        if key not in self.prices:
            self.prices[key] = await self._ask(task, hop)
            self.asked += 1
        return self.prices[key]

    async def hops(self, task: Task, first: int = 0) -> dict[int, float]:
        """Prices of hops `first`.. of a task (one entry for a plain task)."""
        return {hop: await self.price(task, hop) for hop in range(first, task.hop_count)}

    async def total(self, steps: Iterable[tuple[Task, int]]) -> tuple[float, dict[str, float]]:
        """Sum and per-track sums for tasks from the given hop on."""
        per_track: dict[str, float] = {}
        for task, first in steps:
            cost = sum((await self.hops(task, first)).values())
            per_track[task.track] = per_track.get(task.track, 0.0) + cost
        return sum(per_track.values()), per_track

    def known(self, task: Task, hop: int = 0) -> float | None:
        return self.prices.get(self.shape(task, hop))


@dataclass(slots=True)
class Budget:
    """What submissions in progress hold against an optional cap.

    `spent` reads what the journal says was charged (earlier runs too); `held` keeps,
    per task and hop, our estimate until the POST answers, then the API's quote, until
    the job ends and its charge is in the journal. A chain holds every hop it has left
    from before its first hop, so a chain that starts can finish within the cap.
    """

    spent: Callable[[], float]
    cap: float | None = None
    held: dict[tuple[str, int], float] = field(default_factory=dict)
    left_out: set[str] = field(default_factory=set)  # tasks not submitted for lack of budget

    @property
    def committed(self) -> float:
        return sum(self.held.values())

    def holds(self, task: str) -> bool:
        return any(key[0] == task for key in self.held)

    def reserve(self, task: str, prices: Mapping[int, float]) -> bool:
        """Hold `prices` (by hop) for a task; False, holding nothing, when they would pass the cap."""
        wanted = {hop: price for hop, price in prices.items() if (task, hop) not in self.held}
        if self.cap is not None and self.spent() + self.committed + sum(wanted.values()) > self.cap + 1e-9:
            self.left_out.add(task)
            return False
        for hop, price in wanted.items():
            self.held[(task, hop)] = price
        return True

    def quote(self, task: str, hop: int, cost: float | None) -> None:
        """The API quoted the job's cost: hold that instead of our estimate."""
        if cost is not None and (task, hop) in self.held:
            self.held[(task, hop)] = cost

    def release(self, task: str, hop: int | None = None) -> None:
        """The job ended (its charge is in the journal now), or was never sent; None: every hop."""
        if hop is not None:
            self.held.pop((task, hop), None)
            return
        for key in [k for k in self.held if k[0] == task]:
            del self.held[key]

"""Prices: what jobs cost, asked of the API's dry run once per shape and kept.

Jobs that differ only in prompt or seed cost the same, so prices are asked once per
*shape* (every parameter but those two) and cached, in memory and in
`.batchgen/prices.json` so `status` can estimate what remains without the network. A
chained track is priced hop by hop (its middle hops share one shape).

What was spent is the ledger's figure (from the journal); holding a run to `--max-cost`
is `run.spending`'s.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from ..core import text
from ..core.task import Task, canonical, text_band
from . import files
from .layout import Layout

MAX_PRICES_BYTES = 16 * 1024 * 1024
_FREE_OF_CHARGE = ("prompt", "seed")  # the price does not depend on these
_CONTINUATION = ("inputAudio", "continuation", "continuationStart", "continuationEnd")


def pricing_body(
    task: Task, hop: int, asset_id: str | None, uploads: Mapping[str, str] | None = None
) -> dict[str, object]:
    """What to send to the dry run for hop `hop` of a task.

    Input audio that does not exist yet on the API (a local file not uploaded, a
    previous hop not made) is left out, with the fields that need it: the price is the
    generation's, and pricing must not upload or generate anything.
    """
    body = task.hop_body(hop, asset_id, uploads)
    if asset_id is None or hop > 0:
        for key in (*_CONTINUATION, task.file_input):
            body.pop(key, None)
    for item in task.more_files:  # a file not uploaded yet is left out, as input audio is
        value = body.get(item.input)
        if value is None or (isinstance(value, list) and None in value):
            body.pop(item.input, None)
    if task.price_text is not None:
        body[task.prompt_input] = task.price_text  # the longest text of its band: an upper bound
    return body


def shape(task: Task, hop: int = 0) -> str:
    """The part of a job that decides its price.

    MusicGen: the model and every parameter but prompt and seed. A model described by
    its schema: the inputs it marks `costImpact` (every input when it marks none), the
    seed never, and a priced text by its length band rather than its words.
    """
    body = pricing_body(task, hop, None)
    if task.price_inputs is None:
        params = {k: v for k, v in body.items() if k not in _FREE_OF_CHARGE}
    else:
        params = {k: v for k, v in body.items() if k in task.price_inputs and k != "seed"}
        if isinstance(text := params.get(task.prompt_input), str):
            params[task.prompt_input] = f"band:{text_band(len(text))}"
    if hop == 0:
        for item in task.local_files:
            if task.price_inputs is None or item.input in task.price_inputs:
                key = item.input if item.index is None else f"{item.input}[{item.index}]"
                params[key] = f"sha256:{item.sha256}"
    return canonical({"model": task.model, "params": params})


def load_prices(batch_dir: Path) -> dict[str, float]:
    """The cached prices; a damaged or hostile cache is simply not used."""
    try:
        data = text.loads(files.read_regular(Layout(batch_dir).prices, MAX_PRICES_BYTES) or b"{}")
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
    path = Layout(batch_dir).prices
    files.ensure_dir(path.parent)
    files.write_json_atomic(path, dict(prices), durable=False)


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

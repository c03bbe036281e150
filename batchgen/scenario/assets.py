"""Asset lookups, coalesced: many download workers, few `POST /assets/get-bulk` calls.

A worker asks for one asset and awaits it; the batcher gathers the ids asked for (up to
200, the endpoint's limit) and fetches them in one call. This turns a burst of finished
jobs, or a burst of expired URLs after a laptop wakes up, into one request instead of
one per file.

A burst is over when the event loop has gone round once without a new id: the jobs one
listing settles reach their download workers within a pass or two of the loop, so the
batcher asks at once instead of sleeping a fixed window (a wake-up of its own for every
wave of finished jobs, and that much later a download). `window` bounds how long a
steady trickle of new ids can keep it gathering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ..core.errors import ApiError, ErrorKind
from ..core.retry import Backoff, retry_call
from .client import BULK_LIMIT, ScenarioClient
from .models import Asset


class AssetBatcher:
    """Run `run()` in the TaskGroup; call `get()` from any worker."""

    def __init__(
        self,
        client: ScenarioClient,
        *,
        policy: Backoff,
        window: float = 0.05,
        observe: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.client = client
        self.window = window
        self._policy = policy
        self._observe = observe
        self._waiting: dict[str, list[asyncio.Future[Asset]]] = {}
        self._wake = asyncio.Event()

    async def get(self, asset_id: str) -> Asset:
        """The asset with a freshly signed URL."""
        future: asyncio.Future[Asset] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(asset_id, []).append(future)
        self._wake.set()
        return await future

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await self._gather()
            self._wake.clear()
            while self._waiting:
                ids = list(self._waiting)[:BULK_LIMIT]
                waiters = {i: self._waiting.pop(i) for i in ids}
                await self._fetch(ids, waiters)

    async def _gather(self) -> None:
        """Yield to the loop until a pass brings no new id, or `window` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        asked = -1
        while len(self._waiting) != asked and loop.time() < deadline:
            asked = len(self._waiting)
            await asyncio.sleep(0)

    async def _fetch(self, ids: list[str], waiters: dict[str, list[asyncio.Future[Asset]]]) -> None:
        try:
            assets = await retry_call(self._policy, lambda: self.client.get_assets(ids), observe=self._observe)
        except ApiError as err:
            for futures in waiters.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(err)
            return
        found = {a.id: a for a in assets}
        for asset_id, futures in waiters.items():
            for f in futures:
                if f.done():
                    continue  # the waiter was cancelled
                if asset_id in found:
                    f.set_result(found[asset_id])
                else:
                    f.set_exception(ApiError(404, f"asset {asset_id} not found", ErrorKind.PERMANENT))

    def close(self) -> None:
        """Fail whatever is still waiting (the run is ending)."""
        for futures in self._waiting.values():
            for f in futures:
                with contextlib.suppress(asyncio.InvalidStateError):
                    f.cancel()
        self._waiting.clear()

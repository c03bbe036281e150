"""Assets: `GET /assets/{id}`, `POST /assets/get-bulk`, signed URLs, and the audio behind them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import shapes
from .answers import error, json_body
from .audio import SAMPLE_RATE, encode, region, render, render_kind, render_pool, spoil, tone, wav16, wav_size
from .model import SimAsset
from .world import World

_EXTENSIONS = {"audio/mpeg": ".mp3", "audio/ogg": ".ogg"}


class AssetsApi(World):
    """Assets as the API shows them, and their audio, rendered on first use."""

    def _asset_json(self, request: web.Request, asset: SimAsset) -> dict[str, Any]:
        """An asset in the SDK's `Asset` shape, with a freshly signed URL."""
        # Size is known without rendering; audio is made on first download only.
        size = len(asset.data) if asset.data is not None else wav_size(asset.duration, asset.channels)
        ttl = -1.0 if self.faults.roll("expired-url", self.faults.expired_rate) else self.faults.url_ttl
        expires = int(time.time() + ttl)
        base = f"{request.scheme}://{request.host}"
        return shapes.asset(
            asset.id,
            url=f"{base}/cdn/{asset.id}/{asset.id}{_EXTENSIONS.get(asset.mime, '.wav')}"
            f"?expires={expires}&sig={self._sign(asset.id, expires)}",
            mime=asset.mime,
            size=size,
            duration=asset.duration,
            channels=asset.channels,
            rate=SAMPLE_RATE,
            uploaded=asset.job is None,
            created=asset.created,
            owner=asset.project,
        )

    async def _bytes(self, asset: SimAsset) -> bytes:
        if asset.data is None and self.fast_audio and asset.source is None:
            asset.data = await self._encoded(asset, tone(asset.duration, asset.channels))
        if asset.data is None:
            data = await (self._continued(asset) if asset.source else self._render(asset, asset.duration))
            if asset.spoil is not None:
                asset.clean, data = data, await asyncio.to_thread(spoil, data, asset.spoil)
            data = await self._encoded(asset, data)
            if asset.data is None:
                asset.data = data
        return asset.data

    async def _encoded(self, asset: SimAsset, wav: bytes) -> bytes:
        """The model's own container (MP3, Opus) when soundfile can write it; else the WAV, said once."""
        if asset.format == "wav" or asset.spoil is not None:
            return wav
        data = await asyncio.to_thread(encode, wav, asset.format)
        if data is None:
            if not self.faults.injected["wav-for-" + asset.format]:
                print(f"simulator: no encoder for {asset.format} here (install the deliver extra); serving WAV")
            self.faults.injected["wav-for-" + asset.format] += 1
            asset.format = "wav"
            return wav
        return data

    async def _render(self, asset: SimAsset, seconds: float) -> bytes:
        # Rendering is pure Python: in a thread it would hold the GIL and stall the loop
        # (skewing every timing the simulator records), so it runs in a process.
        if asset.kind == "music":
            make: Callable[..., bytes] = render
            args: tuple[object, ...] = (asset.prompt, asset.seed, seconds, asset.channels, asset.key_seed)
        else:
            make, args = render_kind, (asset.kind, asset.prompt, asset.seed, seconds, asset.channels, asset.loop)
        try:
            return await asyncio.get_running_loop().run_in_executor(render_pool(), make, *args)
        except (RuntimeError, OSError, concurrent.futures.process.BrokenProcessPool):
            # No worker processes here (a script without a __main__ guard, a sandbox that
            # forbids them): render in a thread, slower timings but the same bytes.
            return await asyncio.to_thread(make, *args)

    async def _continued(self, asset: SimAsset) -> bytes:
        """A continuation, as audiocraft and Replicate's cog make it: the prompt region of the
        input, then new audio in the same key and tempo, `duration` in all. With the
        `continuation_new_only` fault, only the new audio."""
        assert asset.source is not None
        source_id, start, end = asset.source
        source = self.assets[source_id]
        data = await self._bytes(source)
        prompt = region(source.clean or data, start, end, asset.channels)
        if prompt is None or self.faults.continuation_new_only:
            seconds = asset.duration - (end - start) if prompt is not None else asset.duration
            return await self._render(asset, max(1.0, seconds))
        prompt_frames = len(prompt) // (2 * asset.channels)
        new = await self._render(asset, max(1.0 / SAMPLE_RATE, asset.duration - prompt_frames / SAMPLE_RATE))
        return wav16(prompt + new[44:], asset.channels)

    def _sign(self, asset_id: str, expires: int) -> str:
        return hmac.new(self._url_key, f"{asset_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def _visible(self, asset_id: object, project: str | None) -> SimAsset | None:
        """An asset exists for clients only once its job succeeded (or it was uploaded), in its project."""
        asset = self.assets.get(asset_id) if isinstance(asset_id, str) else None
        if asset is None or asset.project != project:
            return None
        if asset.job is not None and asset.job.status(self.now())[0] != "success":
            return None
        return asset

    async def get_asset(self, request: web.Request) -> web.Response:
        asset = self._visible(request.match_info["asset_id"], request.query.get("projectId"))
        if asset is None:
            return error(404, "asset not found")
        if asset.source is not None or asset.spoil is not None or asset.format != "wav":
            await self._bytes(asset)  # its size depends on what it continues, or on its encoding
        return web.json_response({"asset": self._asset_json(request, asset)})

    async def get_assets(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        ids = body.get("assetIds") if body is not None else None
        if not isinstance(ids, list) or len(ids) > 200:
            return error(400, "assetIds must be a list of at most 200 ids")
        project = request.query.get("projectId")
        found = [a for a in (self._visible(i, project) for i in ids) if a is not None]
        for asset in found:
            if asset.source is not None or asset.spoil is not None or asset.format != "wav":
                await self._bytes(asset)  # its size depends on what it continues, or on its encoding
        return web.json_response({"assets": [self._asset_json(request, a) for a in found]})

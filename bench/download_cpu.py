"""CPU per downloaded file: `download_asset` against an in-process server, N files of SIZE bytes.

    python bench/download_cpu.py ROOT SIZE N

ROOT is a checkout whose `batchgen` is timed; run two under `farm-bench --vs` to compare
two ways of writing (the figure in bench/README.md compares this commit with one that
wrote in place on the event loop). The server's CPU is included, alike for both.
"""

import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1])

from aiohttp import web

from batchgen.core.retry import Backoff
from batchgen.run.download import Limits, download_asset
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.scenario.models import Asset


def wav(frames_bytes: int) -> bytes:
    header = b"RIFF" + (36 + frames_bytes).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
    header += (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return header + b"data" + frames_bytes.to_bytes(4, "little") + bytes(frames_bytes)


async def main(size: int, count: int) -> None:
    body = wav(size)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/a.wav", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory() as tmp:
        async with ScenarioClient(f"http://127.0.0.1:{port}/v1", Credentials("k", "s")) as client:
            asset = Asset("asset_a", f"http://127.0.0.1:{port}/a.wav", "audio/wav", size=len(body))
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with gate:
                    await download_asset(
                        client,
                        asset,
                        Path(tmp) / f"f{i}",
                        refresh=None,  # type: ignore[arg-type]
                        limits=Limits(),
                        policy=Backoff(),
                        folder=Path(tmp),
                    )

            await one(-1)
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    wall = time.perf_counter() - started
    print(f"{sys.argv[1]}: {cpu / count * 1000:.3f} CPU ms a file of {size} bytes, {wall:.2f} s")
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[2]), int(sys.argv[3])))

"""The baseline: what a user writes today from Scenario's docs, honestly and without tricks.

asyncio.gather over every task, a semaphore of M jobs at a time, a fixed 3 s poll per
job, then the asset lookup and the download, all inside the semaphore.

    python bench/naive.py N M OUT_DIR   (SCENARIO_BASE_URL, SCENARIO_API_KEY/SECRET set)
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

import aiohttp


async def one(session: aiohttp.ClientSession, sem: asyncio.Semaphore, base: str, i: int, out: Path) -> None:
    async with sem:
        body = {"prompt": f"naive {i}", "duration": 1, "modelVersion": "melody-large", "seed": i}
        async with session.post(f"{base}/generate/custom/model_meta-musicgen", json=body) as resp:
            job_id = (await resp.json())["job"]["jobId"]
        while True:
            await asyncio.sleep(3)
            async with session.get(f"{base}/jobs/{job_id}") as resp:
                job = (await resp.json())["job"]
            if job["status"] in ("success", "failure", "canceled"):
                break
        asset_id = job["metadata"]["assetIds"][0]
        async with session.get(f"{base}/assets/{asset_id}") as resp:
            url = (await resp.json())["asset"]["url"]
        async with aiohttp.ClientSession() as cdn, cdn.get(url) as resp:
            (out / f"{i}.wav").write_bytes(await resp.read())


async def main(n: int, m: int, out: Path) -> None:
    base = os.environ["SCENARIO_BASE_URL"]
    token = base64.b64encode(f"{os.environ['SCENARIO_API_KEY']}:{os.environ['SCENARIO_API_SECRET']}".encode())
    sem = asyncio.Semaphore(m)
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token.decode()}"}) as session:
        await asyncio.gather(*(one(session, sem, base, i, out) for i in range(n)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))

"""Helpers for tests that run batchgen (in-process or as the CLI) and check a batch folder."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from batchgen import load
from batchgen.run.progress import Reporter
from batchgen.run.runner import RunConfig, Runner, RunResult
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.simulator import Simulator, SimulatorThread

from .conftest import KEY, SECRET, Served

ROOT = Path(__file__).resolve().parent.parent


def requires(tool: str | None, what: str) -> pytest.MarkDecorator:
    """Skip a test when a system tool is missing, except in CI (BATCHGEN_REQUIRE_TOOLS), where
    .ci/run installed it and its absence must fail the test, not hide it."""
    return pytest.mark.skipif(
        tool is None and not os.environ.get("BATCHGEN_REQUIRE_TOOLS"),
        reason=f"{what} is not installed (.ci/run installs it); test skipped",
    )


def fast(out: Path, **kw: object) -> RunConfig:
    """A run's settings for tests: no rate to speak of, quick polls, a short grace period."""
    base: dict[str, object] = dict(out=out, rate=50, max_in_flight=8, poll_interval=0.02, poll_max=0.05, grace=1)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


async def run(served: Served, manifest: Path, config: RunConfig) -> RunResult:
    """Run a manifest in-process against the test's simulator."""
    async with ScenarioClient(served.url, Credentials(KEY, SECRET)) as client:
        return await Runner(load(manifest), client, config, Reporter(quiet=True)).run()


async def eventually(check: Callable[[], Awaitable[object]], within: float = 20, every: float = 0.1) -> None:
    """Wait until `check()` answers something true (polling, as a page or a user would)."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(every)


def env_for(sim: SimulatorThread | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENARIO_")}
    if sim is not None:
        env.update(SCENARIO_BASE_URL=sim.base_url, SCENARIO_API_KEY=KEY, SCENARIO_API_SECRET=SECRET)
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchgen", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchgen", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def wait_for(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def journal_events(folder: Path) -> list[dict]:
    path = folder / ".batchgen" / "state.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a torn last line
            events.append(json.loads(line))
    return events


def count(folder: Path, kind: str) -> int:
    return sum(1 for e in journal_events(folder) if e["ev"] == kind)


def check_invariants(sim: Simulator, folder: Path, tasks: int) -> None:
    """Everything done, every file what the server made, nothing partial, nothing paid twice."""
    sidecars = sorted(folder.glob("*.json"))
    assert len(sidecars) == tasks
    assert not list(folder.glob("*.part")), "a partial file was left behind"
    for sidecar_path in sidecars:
        sidecar = json.loads(sidecar_path.read_text())
        data = (folder / sidecar["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sidecar["sha256"]
        job = sim.jobs[sidecar["jobId"]]
        assert sim.assets[job.asset_ids[0]].data == data
    per_task = Counter((j.params["prompt"], j.params["seed"]) for j in sim.jobs.values() if j.kind == "generate")
    assert set(per_task.values()) == {1}, f"a task was submitted twice: {per_task}"
    assert len(per_task) == tasks

"""Helpers for tests that run the CLI as a subprocess and check a batch folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from batchgen.simulator import Simulator, SimulatorThread

from .conftest import KEY, SECRET

ROOT = Path(__file__).resolve().parent.parent


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

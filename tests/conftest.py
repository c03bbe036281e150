"""Shared fixtures: a real simulator on 127.0.0.1 and a client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from batchgen.client import Credentials, ScenarioClient
from batchgen.simulator import Faults, Simulator, serve

KEY, SECRET = "test-key-7f3a", "test-secret-9c1e-do-not-log"


@dataclass
class Served:
    sim: Simulator
    url: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """A fault-free simulator with 50 ms jobs, served in the test's own loop."""
    sim = Simulator(key=KEY, secret=SECRET, job_time=0.05, faults=Faults(seed=1))
    async with serve(sim) as url:
        yield Served(sim, url)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[ScenarioClient]:
    async with ScenarioClient(served.url, Credentials(KEY, SECRET), read_timeout=10) as c:
        yield c

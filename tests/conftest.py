"""Shared fixtures: a real simulator on 127.0.0.1 and a client pointed at it."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.simulator import Faults, Simulator, serve

KEY, SECRET = "test-key-7f3a", "test-secret-9c1e-do-not-log"


@dataclass
class Served:
    sim: Simulator
    url: str


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own model cache: a schema cached by the user (or another test) never leaks in."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


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


# What makes a test end to end: it runs batchgen (or a tool) as a subprocess, drives a
# browser, or serves the simulator from a thread or a process of its own. `pytest -m "not e2e"`
# is the fast part; the README's command runs everything.
_E2E_CALLS = (
    "run_cli(",
    "start(",
    "subprocess.",
    "Browser(",
    "SimulatorThread(",
    "SimulatorProcess(",
    "tool(",
    "await tool",
)
_E2E_FIXTURES = {"thread", "hostile_runs", "live", "browser"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _E2E_FIXTURES or any(call in source for call in _E2E_CALLS):
            item.add_marker(pytest.mark.e2e)

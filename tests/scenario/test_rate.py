"""The rate gate against a server that counts as strictly as an API may: every rate-counted
arrival in any one-second window, with a few milliseconds of network jitter on each."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen import load
from batchgen.core.errors import ApiError
from batchgen.core.params import MODEL_ID
from batchgen.run.progress import Reporter
from batchgen.run.runner import Runner
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.scenario.limits import earliest_finish
from batchgen.simulator import Faults, SimulatorProcess

from ..conftest import KEY, SECRET, Served
from ..helpers import fast


def busiest_window(times: list[float], window: float = 1.0) -> int:
    """The most arrivals in any closed window of `window` seconds."""
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t - s <= window) for i, s in enumerate(times)), default=0)


def test_busiest_window_counts_a_closed_window() -> None:
    """Two arrivals exactly one window apart share it; a hair more, and they do not."""
    assert busiest_window([0.0, 1.0]) == 2 and busiest_window([0.0, 1.0001]) == 1
    assert busiest_window([0.0, 0.2, 0.4, 1.3, 1.35]) == 3


def test_earliest_finish_follows_the_schedule() -> None:
    """The bound starts each job when the rate window and the in-flight cap allow, then adds J."""
    assert earliest_finish(1, 20, 32, 2.0) == 2.0
    assert earliest_finish(40, 20, 32, 2.0) == pytest.approx(4.0)  # 20 at 0 s, 12 at 1 s, 8 when the first end
    assert earliest_finish(8, 2, 4, 0.5) == pytest.approx(3.5)  # two a second
    assert earliest_finish(10, 20, 4, 1.0) == pytest.approx(3.0)  # concurrency-bound: 4, 4, 2
    assert earliest_finish(3, 0.5, 8, 1.0) == pytest.approx(5.0)  # one every 2 s
    assert earliest_finish(40, 20, 32, 2.0, before=1) == pytest.approx(4.0)  # a dry run fits in the first window
    assert earliest_finish(20, 20, 32, 1.0, before=1) == pytest.approx(2.0)  # here it pushes the last job a window


@pytest.mark.parametrize(
    ("n", "rate", "m", "job"),
    [
        pytest.param(8, 2, 4, 0.5, id="R=2"),
        pytest.param(100, 20, 32, 0.3, id="R=20, rate-bound"),
        pytest.param(64, 20, 16, 0.6, id="R=20, concurrency-bound"),
    ],
)
async def test_strict_window_sees_no_429_of_ours(tmp_path: Path, n: int, rate: int, m: int, job: float) -> None:
    """Zero rate 429s from a server counting every arrival in any 1 s window (with 5 ms of
    jitter), and the makespan within 1.15x of the schedule's bound (bench/ holds it to 1.05x).

    Downloads take 50 ms a file and the client has 8 connections, so they hold pooled ones
    and a granted submission may wait for one before it leaves (as it may wait for a new
    connection, or a busy loop): the gap between a slot's grant and the request's arrival
    that a limiter counting grants cannot see."""
    path = tmp_path / "m.yaml"
    body = "".join(f"  - {{name: t{i}, prompt: p{i}}}\n" for i in range(n))
    path.write_text(f"batch: strict\nseed: 1\ndefaults: {{duration: 1}}\ntracks:\n{body}")
    # The server in a process of its own, as across a network: its clock of arrivals does
    # not wait for the client's turns of the loop, nor for the client to let go of the GIL.
    limits = ["--rate-limit", str(rate), "--jitter", "5", "--bandwidth", "640000", "--seed", "3"]
    with SimulatorProcess("--job-time", str(job), *limits, key=KEY, secret=SECRET) as server:
        config = fast(tmp_path / "out", rate=rate, max_in_flight=m, poll_interval=0.01)
        # Fewer connections than submitters, busy with slow downloads: a granted
        # submission may wait for a connection before it leaves.
        async with ScenarioClient(server.base_url, Credentials(KEY, SECRET), max_connections=8) as client:
            result = await Runner(load(path), client, config, Reporter(quiet=True)).run()
        stats = server.stats()
    assert result.done == n  # type: ignore[attr-defined]
    assert stats["faults"].get("rate-limit", 0) == 0
    arrivals = stats["rate_arrivals"]
    assert len(arrivals) == n + stats["dry_runs"] and busiest_window(arrivals) <= rate
    # The schedule's makespan, as the bound counts it: from the first rate-counted arrival
    # (the dry run that prices the batch) to when the last job, started last, ends.
    makespan = max(stats["submit_times"]) + job - min(arrivals)
    bound = earliest_finish(n, rate, m, job, before=stats["dry_runs"])
    # A margin, not luck: on a shared 2-core machine the schedule came in at 1.02x to 1.07x;
    # a gate that holds requests back costs whole seconds. bench/ measures the 1.05x figure.
    assert makespan <= 1.15 * bound, f"makespan {makespan:.3f} s against a bound of {bound:.3f} s"


async def test_the_simulator_counts_every_arrival_refused_or_not(served: Served, client: ScenarioClient) -> None:
    """Dry runs count against the window, and so do the requests it refuses: a client that
    keeps knocking keeps the window full."""
    served.sim.faults = Faults(rate_limit=2, retry_style="seconds")
    body = {"prompt": "strict", "duration": 1, "modelVersion": "stereo-large"}
    await client.estimate(MODEL_ID, body)
    await client.generate(MODEL_ID, body)
    for _ in range(2):
        with pytest.raises(ApiError) as refused:
            await client.estimate(MODEL_ID, body)
        assert refused.value.status == 429 and refused.value.retry_after == 1
    stats = served.sim.stats()
    assert len(stats["rate_arrivals"]) == 4 and stats["faults"]["rate-limit"] == 2
    assert len([j for j in stats["jobs"] if j["kind"] == "generate"]) == 1

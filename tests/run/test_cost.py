"""Money: estimates from dry runs, the --max-cost cap, refunds, and asking before big spends."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen import load
from batchgen.core.events import Intent, Submitted, Succeeded
from batchgen.core.retry import Backoff
from batchgen.core.task import Task
from batchgen.manifest import expand
from batchgen.run.progress import Reporter
from batchgen.run.runner import RunConfig, Runner, RunResult
from batchgen.run.spending import Spending
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.simulator import Faults, Simulator, SimulatorThread
from batchgen.store.cost import Pricer, shape
from batchgen.store.ledger import Ledger

from ..conftest import KEY, SECRET, Served
from ..helpers import env_for, run_cli

MANIFEST = """\
batch: money
seed: 3
defaults: {modelVersion: melody-large}
tracks:
  - {name: short, prompt: "short sting", duration: 2, takes: 3}
  - {name: long, prompt: "long bed", duration: 10, takes: 2}
  - {name: mbd, prompt: "mono with diffusion", duration: 4, multiBandDiffusion: true}
  - {name: stereo, prompt: "wide pad", duration: 5, modelVersion: stereo-large}
"""
SHAPES = 4  # short, long, mbd and stereo differ in price-relevant parameters; takes do not


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "money.yaml"
    path.write_text(MANIFEST)
    return path


async def run(served: Served, manifest: Path, out: Path, **config: object) -> RunResult:
    settings: dict[str, object] = dict(
        out=out, rate=50, max_in_flight=3, poll_interval=0.02, poll_max=0.05, backoff=Backoff(0.01, 0.1, 10)
    )
    settings.update(config)
    async with ScenarioClient(served.url, Credentials(KEY, SECRET)) as client:
        return await Runner(load(manifest), client, RunConfig(**settings), Reporter(quiet=True)).run()  # type: ignore[arg-type]


async def test_estimate_equals_what_the_run_is_charged(served: Served, manifest: Path, tmp_path: Path) -> None:
    """The dry-run estimate, asked once per price shape, equals the simulator's charges for the run."""
    result = await run(served, manifest, tmp_path / "out")
    stats = served.sim.stats()
    assert result.exit_code == 0
    assert result.estimate == stats["charged"] == result.spent > 0
    assert stats["dry_runs"] == SHAPES
    assert stats["dry_run_in_body"] == 0
    sidecar = json.loads((tmp_path / "out" / "money" / "long-t1.json").read_text())
    assert sidecar["cost"] == 7  # ceil(10 s x 0.7 CU/s for melody-large)


async def test_cap_is_never_passed_and_a_raised_cap_resumes(served: Served, manifest: Path, tmp_path: Path) -> None:
    """--max-cost stops submissions before the cap would pass; a higher cap finishes without resubmitting."""
    out = tmp_path / "out"
    capped = await run(served, manifest, out, max_cost=12)
    charged = served.sim.stats()["charged"]
    assert charged <= 12 and capped.exit_code == 1 and capped.left_for_budget > 0
    assert capped.batch_spent == charged
    again = await run(served, manifest, out, max_cost=12)
    assert again.done == 0 and served.sim.stats()["charged"] == charged  # nothing fits yet: nothing sent
    finished = await run(served, manifest, out, max_cost=1000)
    assert finished.exit_code == 0
    per_task = Counter((j["params"]["prompt"], j["params"]["seed"]) for j in served.sim.stats()["jobs"])
    assert set(per_task.values()) == {1}
    assert finished.batch_spent == served.sim.stats()["charged"]


async def test_refunded_failures_count_as_zero(served: Served, manifest: Path, tmp_path: Path) -> None:
    """Failed jobs cost nothing in the journal's total, which matches what the simulator charged."""
    served.sim.faults = Faults(failure_rate=0.4, seed=5)
    await run(served, manifest, tmp_path / "out", job_retries=3)
    stats = served.sim.stats()
    failed_jobs = [j for j in stats["jobs"] if j["status"] == "failure"]
    assert failed_jobs, "no job failed: the test proved nothing"
    assert Ledger.read(tmp_path / "out" / "money", "money").book.spent == stats["charged"]


async def test_cap_counts_jobs_still_running(served: Served, manifest: Path, tmp_path: Path) -> None:
    """Jobs in flight hold their quoted cost: with slow jobs the cap still holds at every moment."""
    served.sim.job_time = 0.3
    await run(served, manifest, tmp_path / "out", max_cost=15, max_in_flight=8)
    submitted = sum(j["cost"] for j in served.sim.stats()["jobs"])
    assert submitted <= 15


SPENDING = """\
batch: spend
seed: 3
defaults: {modelVersion: melody-large}
chain: {context: 1}
tracks:
  - {name: a, prompt: "a", duration: 4}
  - {name: b, prompt: "b", duration: 4}
  - {name: c, prompt: "c", duration: 3}
  - {name: d, prompt: "d", duration: 7}
  - {name: chain, prompt: "c", duration: 2, length: 3}
"""


async def test_spending_arithmetic(tmp_path: Path) -> None:
    """Reserve, quote, charge and release move creative units where they belong; the ledger has the money."""
    path = tmp_path / "spend.yaml"
    path.write_text(SPENDING)
    tasks = {task.name: task for task in expand(load(path), 3)}

    async def ask(task: Task, hop: int) -> float:
        return 1.0 if task.hop_count > 1 else float(task.params["duration"])

    ledger = Ledger.open(tmp_path / "out", "spend")
    spending = Spending(ledger, Pricer(ask), 10, Reporter(quiet=True))
    assert await spending.reserve(tasks["a"], 0) and await spending.reserve(tasks["b"], 0)
    assert not await spending.reserve(tasks["c"], 0) and spending.left_out == {"c"}
    ledger.record(Intent(task="a", digest=tasks["a"].digest))
    ledger.record(Submitted(task="a", job_id="job_a", cost=3.0))  # the API's quote replaces the estimate
    assert spending.committed == 7
    ledger.record(Succeeded(task="a", job_id="job_a", asset_ids=("asset_a",), cost=3.0))
    assert (spending.spent(), spending.committed) == (3, 4)  # the journal now holds a's charge
    spending.release("b")
    assert spending.committed == 0 and await spending.reserve(tasks["d"], 0)
    assert not await spending.reserve(tasks["chain"], 0) and "chain" in spending.left_out  # all hops or none
    ledger.record(Intent(task="d", digest=tasks["d"].digest))
    ledger.record(Submitted(task="d", job_id="job_d"))  # answered without a quote: the estimate stands
    assert spending.committed == 7
    ledger.close()


def test_shape_ignores_prompt_and_seed(manifest: Path) -> None:
    """Takes of one track share a price shape; tracks that differ in duration do not."""
    tasks = expand(load(manifest))
    assert len({shape(t) for t in tasks}) == SHAPES


@pytest.fixture
def thread() -> Iterator[SimulatorThread]:
    with SimulatorThread(Simulator(key=KEY, secret=SECRET, job_time=0.1)) as t:
        yield t


def test_plan_cost_prices_what_is_left(thread: SimulatorThread, manifest: Path, tmp_path: Path) -> None:
    """`plan --cost --json` prices each shape once and sums per track; no job is created."""
    out = str(tmp_path / "out")
    result = run_cli(["plan", str(manifest), "--cost", "--json", "--out", out], env_for(thread))
    assert result.returncode == 0, result.stderr
    priced = json.loads(result.stdout)
    assert priced["tasks"] == 7 and priced["dry_runs"] == SHAPES
    assert priced["tracks"] == {"short": 6.0, "long": 14.0, "mbd": 4.0, "stereo": 5.0}
    assert priced["total"] == 29
    stats = thread.stats()
    assert stats["jobs"] == [] and stats["dry_run_in_body"] == 0


def test_confirm_above_without_a_terminal_refuses(thread: SimulatorThread, manifest: Path, tmp_path: Path) -> None:
    """Above --confirm-above with no terminal to ask: exit 2 and nothing submitted; --yes goes ahead."""
    out = str(tmp_path / "out")
    args = ["run", str(manifest), "--out", out, "--confirm-above", "10", "--rate", "20", "--poll-interval", "0.05"]
    refused = run_cli(args, env_for(thread))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert thread.stats()["jobs"] == []
    accepted = run_cli([*args, "--yes"], env_for(thread))
    assert accepted.returncode == 0, accepted.stderr
    assert "estimate before submitting: 29 CU" in accepted.stdout


async def test_failures_the_api_does_not_refund_are_counted_and_capped(
    served: Served, manifest: Path, tmp_path: Path
) -> None:
    """billing.disableRefund: a failed job keeps its charge. The journal (and so `status`) says what the
    server charged, retries pay again and say so, and --max-cost holds with them counted."""
    served.sim.faults = Faults(failure_rate=0.5, no_refund=True, seed=9)
    result = await run(served, manifest, tmp_path / "out", job_retries=2, max_cost=30)
    stats = served.sim.stats()
    paid_failures = [j for j in stats["jobs"] if j["status"] == "failure"]
    assert paid_failures, "no job failed: the test proved nothing"
    assert stats["charged"] <= 30  # the cap holds, paid failures included
    assert Ledger.read(tmp_path / "out" / "money", "money").book.spent == stats["charged"]
    assert result.paid_failures == sum(j["cost"] for j in paid_failures)
    assert result.batch_spent == stats["charged"]


def test_status_reports_what_the_server_charged_with_paid_failures(
    thread: SimulatorThread, manifest: Path, tmp_path: Path
) -> None:
    """`status` (no network) shows the credits the server kept for failed jobs, and the summary says so."""
    thread.sim.faults = Faults(failure_rate=1.0, no_refund=True)
    out = str(tmp_path / "out")
    args = ["run", str(manifest), "--out", out, "--rate", "20", "--poll-interval", "0.05", "--job-retries", "0"]
    result = run_cli(args, env_for(thread))
    assert result.returncode == 1 and "paid for jobs that failed without a refund" in result.stdout
    status = json.loads(run_cli(["status", str(manifest), "--out", out, "--json"], env_for(None)).stdout)
    assert status["cu"]["spent"] == thread.stats()["charged"] == 29
    assert status["counts"] == {"failed": 7}


async def test_discounts_are_kept_and_shown(served: Served, manifest: Path, tmp_path: Path) -> None:
    """creativeUnitsDiscount and costDetails from the API go into the journal, the sidecar and the summary."""
    served.sim.faults = Faults(discount=0.25)
    result = await run(served, manifest, tmp_path / "out")
    sidecar = json.loads((tmp_path / "out" / "money" / "long-t1.json").read_text())
    assert sidecar["discount"] == 1.75 and sidecar["costDetails"] == {"custom-generation": 5.25}
    assert result.discount > 0 and result.batch_spent == served.sim.stats()["charged"]

"""The run's pieces on their own: a hop's body, a dry run, finding a lost job, a sidecar."""

from __future__ import annotations

import time
from pathlib import Path

from batchgen.core.events import Intent, Submitted, Succeeded
from batchgen.core.retry import Backoff
from batchgen.core.task import Task
from batchgen.manifest import expand, load
from batchgen.run.download import FileInfo
from batchgen.run.dryrun import dry_runner
from batchgen.run.finish import sidecar_for
from batchgen.run.submit import hop_body
from batchgen.scenario.client import ScenarioClient
from batchgen.scenario.limits import Admission
from batchgen.scenario.reconcile import Finder, Unsure
from batchgen.simulator import price
from batchgen.store.cost import pricing_body
from batchgen.store.ledger import Ledger
from batchgen.store.schemas import shipped

from ..conftest import Served

MANIFEST = """\
batch: pieces
seed: 9
defaults: {modelVersion: stereo-melody-large}
chain: {context: 1}
tracks:
  - {name: plain, prompt: "plain bed", duration: 3}
  - {name: long, prompt: "long bed", duration: 3, length: 5}
"""


def _tasks(tmp_path: Path) -> dict[str, Task]:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    return {task.name: task for task in expand(load(path), 9)}


def test_a_hop_continues_the_output_of_the_one_before(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path)
    ledger = Ledger.open(tmp_path / "out", "pieces")
    long = tasks["long"]
    assert "inputAudio" not in hop_body(ledger, long, 0)
    ledger.record(Intent(task="long", digest=long.digest, hops=long.hop_count))
    ledger.record(Submitted(task="long", job_id="job_1"))
    ledger.record(Succeeded(task="long", job_id="job_1", asset_ids=("asset_first",)))
    second = hop_body(ledger, long, 1)
    assert second["inputAudio"] == "asset_first" and second["continuation"] is True
    assert second["seed"] != hop_body(ledger, long, 0)["seed"]  # each hop its own seed
    ledger.close()


async def test_a_dry_run_prices_through_the_gate(client: ScenarioClient, served: Served, tmp_path: Path) -> None:
    task = _tasks(tmp_path)["plain"]
    seen: list[BaseException] = []
    admission = Admission(20, 4, Backoff())
    priced = await dry_runner(client, admission, Backoff(), {}, seen.append)(task, 0)
    assert priced == price(pricing_body(task, 0, None)) and served.sim.dry_runs == 1 and not seen
    assert served.sim.rate_arrivals  # counted against the rate, as a submit is


async def test_a_lost_answer_is_found_by_its_body_and_a_known_job_never_adopted(
    client: ScenarioClient, served: Served, tmp_path: Path
) -> None:
    task = _tasks(tmp_path)["plain"]
    since = time.time()
    body = hop_body(Ledger.read(tmp_path / "none", "pieces"), task, 0)
    made = (await client.generate(task.model, body)).job
    found = await Finder(client, Backoff(), lambda err: None).adopt([Unsure("k", body, since)])
    assert found["k"].id == made.id
    known = Finder(client, Backoff(), lambda err: None, known={made.id})
    assert await known.find(Unsure("k", body, since)) is None


def test_a_sidecar_says_what_was_asked_made_and_paid(tmp_path: Path) -> None:
    task = _tasks(tmp_path)["plain"]
    ledger = Ledger.open(tmp_path / "out", "pieces")
    ledger.record(Intent(task="plain", digest=task.digest))
    ledger.record(Submitted(task="plain", job_id="job_9", cost=3.0))
    ledger.record(Succeeded(task="plain", job_id="job_9", asset_ids=("asset_9",), cost=3.0))
    state = ledger.state("plain")
    assert state is not None
    made = [FileInfo("plain.wav", 10, "ab" * 32, "audio/wav", "asset_9")]
    sidecar = sidecar_for(task, state, made, {"jobSeconds": 1.0})
    assert (sidecar["name"], sidecar["jobId"], sidecar["assetId"], sidecar["cost"]) == (
        "plain",
        "job_9",
        "asset_9",
        3.0,
    )
    assert sidecar["prompt"] == "plain bed" and sidecar["digest"] == task.digest and sidecar["sha256"] == "ab" * 32
    schema = shipped("model_meta-musicgen")
    assert schema is not None and sidecar["model"] == "model_meta-musicgen"
    assert sidecar["schemaDigest"] == schema.digest() and len(schema.digest()) == 16
    ledger.close()

"""A batch folder written by batchgen 0.2.0 resumes under this version as it is.

`tests/fixtures/batch-0.2.0` was made by 0.2.0 itself (commit ef0d69e) on its simulator,
killed with SIGKILL once the chain's first hop had landed: `plain-t2` done and picked,
`plain-t1` and the chain's second hop with jobs in flight, the chain's first hop on disk
as a hop file, a lock left by the dead process. The manifest then gained `later`.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from batchgen.listen import picks
from batchgen.manifest import expand_as_recorded, load
from batchgen.simulator.model import SimAsset
from batchgen.store.ledger import Ledger

from ..conftest import Served
from ..helpers import fast, journal_events, run

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "batch-0.2.0"
BATCH = "made-by-020"


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    shutil.copytree(FIXTURE / BATCH, out / BATCH)
    manifest = tmp_path / "manifest.yaml"
    shutil.copy(FIXTURE / "manifest.yaml", manifest)
    return manifest, out / BATCH


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_its_journal_reads_as_it_was_left(tmp_path: Path) -> None:
    manifest, folder = _copy(tmp_path)
    ledger = Ledger.read(folder, BATCH)
    assert ledger.warnings == []
    tasks = expand_as_recorded(load(manifest), ledger.base_seed)
    plan = {task.name: ledger.plan(task, ledger.files_present()) for task in tasks}
    assert plan == {"plain-t1": "in-flight", "plain-t2": "done", "long": "in-flight", "later": "new"}
    assert ledger.book.spent == 3.0  # plain-t2 (1 CU) and the chain's first hop (2 CU)
    chain = ledger.state("long")
    assert chain is not None and chain.hops[0].file is not None and chain.hops[1].job_id


async def test_it_resumes_paying_for_nothing_again(served: Served, tmp_path: Path) -> None:
    manifest, folder = _copy(tmp_path)
    landed = folder / ".batchgen" / "hops" / "long.h1.wav"
    kept = _sha(folder / "plain-t2.wav"), _sha(landed)
    # The server still holds the landed hop's asset, which the chain's next hop continues.
    old = "asset_000002e9932f"
    served.sim.assets[old] = SimAsset(old, "slow strings", 7, 2.0, 2, data=landed.read_bytes())
    result = await run(served, manifest, fast(folder.parent))
    assert result.failed == {} and result.done == 3
    # The two jobs 0.2.0 left running are unknown to this server (gone, never charged):
    # made once each; `later` once; the done take and the landed hop never again.
    jobs = [j for j in served.sim.stats()["jobs"] if j["kind"] == "generate"]
    assert len(jobs) == 3
    assert sorted(j["params"].get("prompt", "") for j in jobs) == ["calm piano", "slow strings", "soft bells"]
    assert kept == (_sha(folder / "plain-t2.wav"), _sha(landed))
    assert result.paid_twice == []
    ledger = Ledger.read(folder, BATCH)
    assert ledger.warnings == []
    assert ledger.book.spent == 3.0 + served.sim.stats()["charged"]
    events = journal_events(folder)
    assert [e["ev"] for e in events[:1]] == ["batch"] and all(type(e.get("n")) is int for e in events)
    assert {t.name: ledger.plan(t) for t in expand_as_recorded(load(manifest), ledger.base_seed)} == dict.fromkeys(
        ("plain-t1", "plain-t2", "long", "later"), "done"
    )


def test_its_picks_still_count(tmp_path: Path) -> None:
    _, folder = _copy(tmp_path)
    marks = picks.load(folder, BATCH)
    assert marks.picked() == ["plain-t2"]
    assert marks.marks["plain-t2"].note == "warm, keep"

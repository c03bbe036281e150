"""What is left for each task, read from the journal: the start of every run."""

from __future__ import annotations

from pathlib import Path

from batchgen import expand, load
from batchgen.core.events import Failed, Intent, Submitted, Succeeded
from batchgen.run.triage import triage
from batchgen.store.ledger import Ledger


def test_each_task_goes_where_its_state_says(tmp_path: Path) -> None:
    """A running job is polled (never submitted again), an intent with no job id is looked for, a
    succeeded job is downloaded, an earlier failure stays failed unless retried, the rest submitted."""
    (tmp_path / "m.yaml").write_text(
        "batch: t\nseed: 1\ndefaults: {duration: 1}\ntracks:\n"
        + "".join(f"  - {{name: {n}, prompt: p{n}}}\n" for n in ("running", "unsure", "made", "broken", "fresh"))
    )
    tasks = {t.name: t for t in expand(load(tmp_path / "m.yaml"), 1)}
    ledger = Ledger.open(tmp_path / "t", "t")
    ledger.start("t", None)
    for name in ("running", "unsure", "made", "broken"):
        ledger.record(Intent(task=name, hop=1, hops=1, digest=tasks[name].digest, attempt=1))
    for name in ("running", "made", "broken"):
        ledger.record(Submitted(task=name, hop=1, job_id=f"job_{name}", cost=1.0))
    ledger.record(Succeeded(task="made", hop=1, job_id="job_made", asset_ids=["asset_made"], cost=1.0))
    ledger.record(Failed(task="broken", reason="job failed 2 time(s)", permanent=False, attempt=1))
    ledger.close()

    def names(steps: list) -> list[str]:  # type: ignore[type-arg]
        return [task.name for task, _ in steps]

    plan = triage(Ledger.read(tmp_path / "t", "t"), tasks.values(), retry_failed=False, hop_files={})
    assert names(plan.poll) == ["running"] and names(plan.reconcile) == ["unsure"]
    assert names(plan.download) == ["made"] and names(plan.submit) == ["fresh"]
    assert list(plan.failed) == ["broken"] and "--retry-failed" in plan.failed["broken"]
    again = triage(Ledger.read(tmp_path / "t", "t"), tasks.values(), retry_failed=True, hop_files={})
    assert sorted(names(again.submit)) == ["broken", "fresh"] and not again.failed

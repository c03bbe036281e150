"""How a job ended, from its final answer: one of five outcomes, matched, never a flag and a tuple."""

from __future__ import annotations

import pytest

from batchgen.scenario.models import Job
from batchgen.scenario.outcomes import Canceled, Failed, Succeeded, ended
from batchgen.simulator import shapes


def _job(status: str, *, refundable: bool = True, error: str | None = None) -> Job:
    body = shapes.job(
        "job_1",
        kind="generate",
        status=status,
        progress=1.0,
        history=[("queued", 0.0), (status, 1.0)],
        params={"prompt": "p"},
        asset_ids=["asset_1"],
        cost=4.0,
        refundable=refundable,
        error=error,
        created=0.0,
        updated=1.0,
    )
    return Job.parse({"job": body})


@pytest.mark.parametrize(
    ("job", "outcome"),
    [
        (_job("success"), Succeeded),
        (_job("failure", error="out of memory"), Failed("out of memory")),
        (_job("failure", refundable=False, error="bad input"), Failed("bad input", refunded=False, charge=4.0)),
        (_job("canceled"), Canceled),
    ],
    ids=["success", "refunded failure", "kept charge", "canceled"],
)
def test_a_final_answer_is_one_outcome(job: Job, outcome: object) -> None:
    """success -> Succeeded(job); failure -> Failed (refunded, or keeping its charge); canceled -> Canceled."""
    got = ended(job)
    if isinstance(outcome, type):
        assert isinstance(got, outcome)
        if isinstance(got, Succeeded):
            assert got.job.asset_ids == ("asset_1",)
    else:
        assert got == outcome


def test_a_model_that_disables_refunds_keeps_a_failed_jobs_charge() -> None:
    """A model whose schema says disableRefund keeps the charge though the job's billing says nothing."""
    job = _job("failure", error="bad input")
    assert ended(job) == Failed("bad input")
    assert ended(job, keeps_charge=True) == Failed("bad input", refunded=False, charge=4.0)
    unpriced = Job(id="job_2", status="failure", error="bad input")
    assert ended(unpriced, keeps_charge=True, quoted=2.5) == Failed("bad input", refunded=False, charge=2.5)

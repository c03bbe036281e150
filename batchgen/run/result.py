"""How a run ended: one value computed from the task states when it did, for the CLI to print."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..core.state import Status
from ..core.task import Task
from ..store.ledger import Ledger


@dataclass(slots=True)
class RunResult:
    """How a run ended, computed from the task states when it did."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    spent: float = 0.0
    paid_failures: float = 0.0  # creative units kept by jobs that failed without a refund
    discount: float = 0.0
    elapsed: float = 0.0
    interrupted: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    estimate: float | None = None  # creative units the remaining tasks were priced at
    left_for_budget: int = 0  # tasks not submitted because --max-cost would be passed
    held_off: str | None = None  # why submitting stopped early: the API asked to come back after --max-wait
    left_for_wait: int = 0  # tasks not submitted because of that, left for the next run
    paid_twice: list[str] = field(default_factory=list)  # chain hops made again after landing unusable
    batch_spent: float = 0.0  # the batch's total, earlier runs included

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.left_for_budget or self.left_for_wait else 0

    def count(self, ledger: Ledger, tasks: Iterable[Task], skipped: list[Task], failed: Mapping[str, str]) -> None:
        """Done, failed and discounts from the states of the tasks this run worked on."""
        self.skipped, self.failed = len(skipped), dict(failed)
        worked = {task.name for task in tasks} - {t.name for t in skipped} - set(failed)
        for name in worked:
            st = ledger.state(name)
            if st is None:
                continue
            if st.status is Status.DONE:
                self.done += 1
            elif st.status is Status.FAILED:
                self.failed[name] = st.reason or "failed"
            elif st.deferred:  # left as it is for the next run: not done
                self.failed[name] = st.deferred
            for hop in st.hops:
                self.discount += float((hop.detail or {}).get("discount", 0.0))

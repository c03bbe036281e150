"""What is left to do for each task, read from its state: the start of every run.

Pure: task states and the folder's file names in, a `Plan` out. A task is skipped when
it is done with files on disk; a job known to be running is polled (never submitted
again); an intent without a job id is looked for on the server; a job that succeeded
is downloaded; a chain continues from the hop it was in; a task that failed before
stays failed unless `--retry-failed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..core.state import HopState, PlanStatus, Status, TaskState
from ..core.task import Task
from ..store.ledger import Ledger

Step = tuple[Task, int]  # a task and one of its hops (0-based)


@dataclass(slots=True)
class Plan:
    """The work of one run, by kind. A chained task may be in several lists (one hop each)."""

    submit: list[Step] = field(default_factory=list)
    poll: list[Step] = field(default_factory=list)
    download: list[Step] = field(default_factory=list)
    reconcile: list[Step] = field(default_factory=list)
    stitch: list[Task] = field(default_factory=list)  # every hop on disk, the track not yet made
    skipped: list[Task] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # failed in an earlier run, not retried
    missing: list[Task] = field(default_factory=list)  # done, but the file is gone from disk

    @property
    def open(self) -> set[str]:
        """Names of the tasks this run works on."""
        steps = (*self.submit, *self.poll, *self.download, *self.reconcile)
        return {task.name for task, _ in steps} | {task.name for task in self.stitch}


def triage(ledger: Ledger, tasks: Iterable[Task], *, retry_failed: bool, hop_files: Mapping[str, int]) -> Plan:
    """Sort tasks by what their states say is left to do."""
    plan = Plan()
    present = ledger.files_present()
    for task in tasks:
        status = ledger.plan(task, present)
        st = ledger.state(task.name)
        if status is PlanStatus.DONE:
            plan.skipped.append(task)
        elif st is None or status is PlanStatus.CHANGED:
            plan.submit.append((task, 0))
        elif status is PlanStatus.MISSING:
            # Paid for already: fetched again from its assets (a chain stitched again from
            # its hops); only an asset the API no longer has is generated again.
            plan.missing.append(task)
            if all(_on_disk(h, hop_files) for h in st.hops) and task.hop_count > 1:
                plan.stitch.append(task)
            elif all(h.asset_ids for h in st.hops):
                plan.download += [
                    (task, i) for i, h in enumerate(st.hops) if not task.shaped or not _on_disk(h, hop_files)
                ]
            else:
                plan.submit.append((task, 0))
        elif status is PlanStatus.FAILED and not retry_failed:
            plan.failed[task.name] = f"{st.reason} (failed in an earlier run; --retry-failed to try again)"
        else:
            _resume(plan, task, st, hop_files)
    return plan


def _on_disk(hop: HopState, hop_files: Mapping[str, int]) -> bool:
    if hop.status is not Status.DONE or hop.file is None:
        return False
    name = str(hop.file["path"]).rsplit("/", 1)[-1]
    return bool(hop_files.get(name) == hop.file["bytes"])


def _resume(plan: Plan, task: Task, st: TaskState, hop_files: Mapping[str, int]) -> None:
    """A task part-way (or failed and retried): each hop where it stands."""
    chained = task.shaped
    for index, hop in enumerate(st.hops):
        if hop.status is Status.DOWNLOADING or (chained and hop.status is Status.DONE and not _on_disk(hop, hop_files)):
            plan.download.append((task, index))
    index = st.hop
    current = st.hops[index]
    if current.status is Status.SUBMITTING:
        plan.reconcile.append((task, index))
    elif current.status is Status.IN_FLIGHT:
        plan.poll.append((task, index))
    elif current.status is Status.NEW and (index == 0 or _on_disk(st.hops[index - 1], hop_files)):
        plan.submit.append((task, index))  # a later hop only once the one it continues has landed, checked
    elif chained and st.succeeded and all(_on_disk(h, hop_files) for h in st.hops):
        plan.stitch.append(task)

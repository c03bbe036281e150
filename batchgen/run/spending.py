"""Money in one run, against an optional `--max-cost`: read from the ledger, estimated only where it cannot be.

The ledger knows what was charged (`spent`, earlier runs too) and the API's quote of
every job running now (`Ledger.quoted`). What it cannot know yet is kept here as
estimates, priced by dry runs: hops reserved and not yet submitted (a chain reserves
every hop it has left before its first, so a chain that starts can finish within the
cap), and a job whose POST answered without a quote. An estimate stands until the
ledger prices its hop (a quote, a charge) or the task ends; it is never a second
count of what the ledger holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.state import Status
from ..core.task import Task
from ..store.cost import Pricer
from ..store.ledger import Ledger
from .progress import Reporter

_SLACK = 1e-9  # prices are floats: a sum that equals the cap fits it


@dataclass(frozen=True, slots=True)
class _Estimate:
    price: float
    attempts: int  # the task's intents when the hop was reserved: a later one means it was submitted


class Spending:
    """What this run holds against the cap: the ledger's figures plus estimates of what is not in it yet."""

    def __init__(self, ledger: Ledger, pricer: Pricer, cap: float | None, reporter: Reporter) -> None:
        self._ledger, self._pricer, self.cap, self._reporter = ledger, pricer, cap, reporter
        self._estimates: dict[tuple[str, int], _Estimate] = {}
        self.left_out: set[str] = set()  # tasks not submitted for lack of budget

    @property
    def committed(self) -> float:
        """Creative units that jobs running and hops reserved may still cost."""
        return self._ledger.quoted() + self._estimated()

    def spent(self) -> float:
        return self._ledger.book.spent

    async def reserve(self, task: Task, hop: int) -> bool:
        """Hold what the task's remaining hops cost against the cap; False (holding nothing) if they won't fit."""
        if self.cap is None:
            self._hold(task.name, {hop: self._pricer.known(task, hop) or 0.0})  # shown as running, never a limit
            return True
        if self._holds(task.name):  # a chain under way holds its hops already; a retried hop needs its own
            prices = {hop: await self._pricer.price(task, hop)}
        else:  # a task (or what is left of a chain) starts only if all of it fits
            prices = await self._pricer.hops(task, hop)
        wanted = {h: price for h, price in prices.items() if (task.name, h) not in self._estimates}
        if self.spent() + self.committed + sum(wanted.values()) <= self.cap + _SLACK:
            self._hold(task.name, wanted)
            return True
        self.left_out.add(task.name)
        self._reporter.event(
            "budget",
            task.name,
            message=f"left: {sum(prices.values()):g} CU would pass --max-cost {self.cap:g} "
            f"(spent {self.spent():g}, running {self.committed:g})",
        )
        return False

    def release(self, task: str) -> None:
        """The task's hops will not be submitted in this run (it stopped, failed or was left)."""
        for key in [k for k in self._estimates if k[0] == task]:
            del self._estimates[key]

    def _hold(self, task: str, prices: Mapping[int, float]) -> None:
        st = self._ledger.state(task)
        attempts = st.attempts if st is not None else 0
        for hop, price in prices.items():
            self._estimates[(task, hop)] = _Estimate(price, attempts)

    def _holds(self, task: str) -> bool:
        return any(key[0] == task for key in self._estimates)

    def _estimated(self) -> float:
        """The estimates the ledger cannot replace yet; the ones it has priced are dropped."""
        total = 0.0
        for key, estimate in list(self._estimates.items()):
            pending = self._pending(key[0], key[1], estimate)
            if pending:
                total += estimate.price
            else:
                del self._estimates[key]
        return total

    def _pending(self, task: str, hop: int, estimate: _Estimate) -> bool:
        st = self._ledger.state(task)
        if st is None or st.attempts == estimate.attempts:
            return True  # not submitted since it was reserved
        if st.outcome is not None or hop >= len(st.hops):
            return False  # the task ended: a charge is in `spent`, a refund costs nothing
        state = st.hops[hop]
        if state.status is Status.IN_FLIGHT:
            return state.cost is None  # quoted: the ledger counts it now
        return state.status in (Status.NEW, Status.SUBMITTING)  # being sent, or a failed job's retry to come

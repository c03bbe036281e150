"""How a job ended, as a small type matched with `match`, not a tuple of optionals and a flag."""

from __future__ import annotations

from dataclasses import dataclass

from .models import Job, JobStatus


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The job made its assets; they are paid for."""

    job: Job


@dataclass(frozen=True, slots=True)
class Failed:
    """The job failed. Refunded unless its billing said `disableRefund`; then `charge` was kept."""

    reason: str
    refunded: bool = True
    charge: float | None = None


@dataclass(frozen=True, slots=True)
class Canceled:
    """The job was canceled (by someone, on the server)."""

    reason: str = "job was canceled"


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The job ran past --job-timeout; it was canceled through the API if it allowed."""

    reason: str


@dataclass(frozen=True, slots=True)
class Gone:
    """The API no longer knows the job (404): treated as a refunded failure."""

    reason: str = "job not found on the server"


JobEnd = Succeeded | Failed | Canceled | TimedOut | Gone


def ended(job: Job, *, keeps_charge: bool = False, quoted: float | None = None) -> JobEnd:
    """The outcome of a job in a terminal status.

    A failure is refunded unless the job's billing says `disableRefund`, or its model does
    (`keeps_charge`); an unrefunded failure costs the job's charge, else what was quoted.
    """
    if job.status == JobStatus.SUCCESS:
        return Succeeded(job)
    if job.status == JobStatus.CANCELED:
        return Canceled(f"job was canceled{': ' + job.error if job.error else ''}")
    reason = job.error or "job failed without a reason"
    if job.refundable and not keeps_charge:
        return Failed(reason)
    charge = job.charge if job.charge is not None else quoted
    return Failed(reason, refunded=False, charge=charge if charge is not None else 0.0)

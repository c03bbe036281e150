"""Every knob of a run, in one frozen value the CLI fills from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.retry import Backoff
from .download import Limits


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Every knob of a run; the CLI fills it from the command line."""

    out: Path = Path("output")
    rate: float = 2.0
    max_in_flight: int = 8
    workers: int | None = None
    download_workers: int | None = None
    poll_interval: float = 1.0
    poll_max: float = 15.0
    poll_concurrency: int = 16
    retry_failed: bool = False
    job_retries: int = 1
    hop_redos: int = 1  # times a chain hop that landed unusable is made again (each one paid)
    job_timeout: float = 1800.0
    limits: Limits = field(default_factory=Limits)
    grace: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)
    max_cost: float | None = None
    estimate: bool = True  # price what is left with dry runs and say so before submitting
    max_price_shapes: int = 100  # without --max-cost, skip the estimate past this many dry runs

    @property
    def submit_workers(self) -> int:
        # Enough to keep the throttle busy while some wait on a slow POST.
        return self.workers or max(2, min(32, self.max_in_flight, int(self.rate * 2) + 1))

    @property
    def downloaders(self) -> int:
        # A listing often ends many jobs at once: fetching them together costs one bulk
        # asset lookup and a few turns of the event loop, where a handful of workers
        # would trickle them out one by one (and pay the wake-ups for each).
        return self.download_workers or max(4, min(32, self.max_in_flight))

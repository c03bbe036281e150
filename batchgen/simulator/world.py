"""The state every route of the simulator shares."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter, deque

from ..core.schema import ModelSchema
from ..store.schemas import shipped
from .faults import Faults
from .model import SimAsset, SimJob, SimUpload


class World:
    """The simulator's state: jobs, assets, uploads, faults, and what tests read back."""

    def __init__(
        self,
        *,
        key: str = "sim-key",
        secret: str = "sim-secret",
        job_time: float = 3.0,
        faults: Faults | None = None,
        fast_audio: bool = False,
    ) -> None:
        self.key, self.secret = key, secret
        self.job_time = job_time
        # Benchmarks: one cached tone per (duration, channels) instead of a piece per
        # prompt and seed, so rendering does not compete with the client for the CPU.
        self.fast_audio = fast_audio
        self.faults = faults or Faults()
        self._url_key = secrets.token_bytes(16)
        # Schemas served and enforced in place of (or beside) the shipped ones: a model
        # whose live schema changed, or one that ships none.
        self.catalog: dict[str, ModelSchema] = {}
        self.jobs: dict[str, SimJob] = {}
        self.assets: dict[str, SimAsset] = {}
        self.uploads: dict[str, SimUpload] = {}
        self.upload_time = min(0.3, job_time)  # seconds an upload stays `validating`
        self._ids = itertools.count(1)
        self._active: list[SimJob] = []
        self._arrivals: deque[float] = deque()  # rate-counted arrivals inside the window (loop clock)
        self._style = itertools.cycle(("seconds", "date", "ms", "body"))
        # What tests read back through /__stats.
        self.requests: Counter[str] = Counter()
        self.submit_times: list[float] = []
        self.rate_arrivals: list[float] = []  # every rate-counted arrival (loop clock), refused ones too
        self.listed_after: list[float] = []  # each listing's createdAfter, as epoch seconds
        self.max_active = 0
        self.dry_runs = 0
        self.dry_run_in_body = 0
        self.bytes_served = 0
        self.downloads_complete: Counter[str] = Counter()
        self.charged = 0.0
        self.projects: Counter[str | None] = Counter()  # projectId of each API request (None: none given)

    def schema(self, model: str) -> ModelSchema | None:
        """The schema the simulator serves and enforces for `model` (None: no such model)."""
        return self.catalog.get(model) or shipped(model)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}{secrets.token_hex(3)}"

    def _active_count(self) -> int:
        now = self.now()
        self._active = [j for j in self._active if j.status(now)[0] not in ("success", "failure", "canceled")]
        return len(self._active)

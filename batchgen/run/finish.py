"""From a succeeded job to a finished task: files downloaded, sidecar written, `done` recorded.

A plain task's assets become `<name>.<ext>` (then `<name>-2.<ext>`, ...), its sidecar
`<name>.json`, and then the journal says `done`. A chained track's hops go to
`.batchgen/hops/` one by one (`hop_done`); once every hop is there they are stitched
into `<name>.wav`. Files are renamed into place only complete and verified, and their
fsyncs are grouped with the journal's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from .. import __version__
from ..audio.stitch import Unusable, check_hop, size_and_sha256
from ..audio.wavfile import WavError
from ..core.errors import BatchgenError, DownloadError
from ..core.events import Done, HopDone, HopUnusable
from ..core.retry import Backoff
from ..core.state import TaskState
from ..core.task import Task
from ..scenario.assets import AssetBatcher
from ..scenario.client import ScenarioClient
from ..scenario.models import Asset, iso
from ..store import files
from ..store.layout import Layout
from ..store.ledger import Ledger
from .download import FileInfo, Limits, download_asset


class StitchFailed(BatchgenError):
    """Every hop is on disk and checked, and still they do not make the track."""


class Fetched(Enum):
    """What downloading one job's output came to."""

    DONE = "done"  # the task is finished: files, sidecar, `done` recorded
    HOP = "hop"  # a chain hop landed and checked out: the next hop may be submitted
    UNUSABLE = "unusable"  # a chain hop landed unusable (`hop_unusable` recorded): make it again


# One line of JSON: the C encoder (indent= would take the slow pure-Python one, a tenth of
# a run's CPU on small tasks); `python -m json.tool` shows a sidecar indented.
_SIDECAR = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


class Finisher:
    """Downloads the outputs of succeeded jobs and records what they became."""

    def __init__(
        self,
        client: ScenarioClient,
        assets: AssetBatcher,
        ledger: Ledger,
        folder: Path,
        *,
        limits: Limits,
        policy: Backoff,
        stitch: Callable[[Task, TaskState, Path], dict[str, Any]] | None = None,
    ) -> None:
        self._client = client
        self._assets = assets
        self._ledger = ledger
        self.folder = folder
        self._layout = Layout(folder)
        self._limits = limits
        self._policy = policy
        self._stitch = stitch
        self.marks: dict[str, dict[str, float]] = {}  # wall-clock milestones per task, for sidecars

    def hop_files(self) -> dict[str, int]:
        """The hop files of chained tracks on disk, and their sizes."""
        return files.sizes(self._layout.hops)

    def mark(self, task: str, moment: str) -> None:
        self.marks.setdefault(task, {})[moment] = time.time()

    async def fetch(self, task: Task, hop: int) -> Fetched:
        """Download hop `hop`'s assets: the task is done, a chain hop landed (checked), or it is unusable."""
        st = self._ledger.state(task.name)
        assert st is not None
        asset_ids = st.hops[hop].asset_ids
        if not asset_ids:
            raise DownloadError("job succeeded without assets", retryable=False)
        if not task.shaped:
            made = [
                await self._download(asset_id, self.folder / _stem(task.name, i))
                for i, asset_id in enumerate(asset_ids)
            ]
            self._done(task, made)
            return Fetched.DONE
        files.ensure_dir(self._layout.hops)
        landed = await self._download(asset_ids[0], self._layout.hop(task.name, hop))
        first = self.folder / st.hops[0].file["path"] if hop and st.hops[0].file else None
        plan = task.hops[hop]
        try:
            wav = await asyncio.to_thread(
                check_hop, self.folder / landed.path, plan.duration, plan.context or 0.0, first
            )
        except Unusable as err:
            self._ledger.record(
                HopUnusable(task=task.name, hop=hop + 1, job_id=st.hops[hop].job_id or "", reason=str(err))
            )
            return Fetched.UNUSABLE
        if wav != self.folder / landed.path:  # decoded (MP3, FLAC, Ogg): the WAV is what is kept
            files.unlink_quietly(self.folder / landed.path)
        size, digest = await asyncio.to_thread(size_and_sha256, wav)
        kept = FileInfo(str(wav.relative_to(self.folder)), size, digest, "audio/wav", landed.asset_id)
        self._ledger.record(HopDone(task=task.name, hop=hop + 1, file=kept.as_dict()))
        return Fetched.DONE if await self.stitch(task) else Fetched.HOP  # stitched once every hop is in

    async def stitch(self, task: Task) -> bool:
        """Stitch a chained track whose hops are all on disk; True when it is done."""
        st = self._ledger.state(task.name)
        assert st is not None and self._stitch is not None
        if not all(h.file is not None for h in st.hops):
            return False
        try:
            record = await asyncio.to_thread(self._stitch, task, st, self.folder)
        except WavError as err:
            raise StitchFailed(f"could not stitch the hops: {err}") from None
        info = FileInfo(record["path"], record["bytes"], record["sha256"], "audio/wav", st.hops[-1].asset_ids[0])
        self._done(task, [info], chain=record.get("chain"))
        return True

    async def _download(self, asset_id: str, dest: Path) -> FileInfo:
        asset = await self._assets.get(asset_id)

        async def refresh() -> Asset:
            return await self._assets.get(asset_id)

        return await download_asset(
            self._client,
            asset,
            dest,
            refresh=refresh,
            limits=self._limits,
            policy=self._policy,
            folder=self.folder,
        )

    def _done(self, task: Task, made: list[FileInfo], chain: Any = None) -> None:
        """Write the sidecar, then record `done` with every file and its size.

        Files are renamed into place complete and verified but not fsynced one by one
        (that was a third of a small task's CPU): the journal has each file's size, and
        a file a power cut left short is found on resume and fetched again, at no cost.
        """
        st = self._ledger.state(task.name)
        assert st is not None
        sidecar = sidecar_for(task, st, made, _timings(self.marks.pop(task.name, {}), time.time()))
        if chain is not None:
            sidecar["chain"] = chain
        data = (_SIDECAR.encode(sidecar) + "\n").encode()
        path = self._layout.sidecar(task.name)
        files.write_atomic(path, data, durable=False)
        self._ledger.record(
            Done(
                task=task.name,
                digest=task.digest,
                files=tuple(f.as_dict() for f in made),
                sidecar={"path": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
                cost=st.spent,
                job_id=st.hops[-1].job_id,
            )
        )


def sidecar_for(task: Task, st: TaskState, made: list[FileInfo], timings: dict[str, object]) -> dict[str, Any]:
    """The sidecar of a finished task: what was asked, what was made, what it cost."""
    last = st.hops[-1]
    out: dict[str, Any] = {
        "track": task.track,
        "take": task.take,
        "name": task.name,
        "prompt": task.prompt,
        "params": dict(task.params),
        "point": dict(task.point),
        "seed": task.seed,
        "model": task.model,
        "digest": task.digest,
        "jobId": last.job_id,
        "assetId": made[0].asset_id,
        "assetIds": [f.asset_id for f in made],
        "file": made[0].path,
        "bytes": made[0].bytes,
        "sha256": made[0].sha256,
        "files": [f.as_dict() for f in made],
        "cost": st.spent,
        "timings": timings,
        "batchgen": __version__,
    }
    if last.detail:
        out.update(last.detail)
    if task.input_audio:
        out["inputAudio"] = {"file": task.params.get("inputAudio"), "sha256": task.audio_sha256}
    if task.schema_digest is not None:
        out["schemaDigest"] = task.schema_digest  # the inputs the request was checked against
    return out


def _stem(name: str, index: int) -> str:
    return name if index == 0 else f"{name}-{index + 1}"


def _timings(marks: dict[str, float], now: float) -> dict[str, object]:
    """Sidecar timings; a task resumed from an earlier run knows only when it finished."""
    out: dict[str, object] = {"finishedAt": iso(now)}
    if "submitted" in marks:
        out["submittedAt"] = iso(marks["submitted"])
        out["totalSeconds"] = round(now - marks["submitted"], 3)
    if "succeeded" in marks:
        out["downloadSeconds"] = round(now - marks["succeeded"], 3)
        if "submitted" in marks:
            out["jobSeconds"] = round(marks["succeeded"] - marks["submitted"], 3)
    return out

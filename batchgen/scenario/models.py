"""What the API answers, as batchgen uses it: jobs, submissions, assets and uploads, typed.

Each `parse` reads an answer defensively (`fields`): unknown fields are ignored, and an
answer that does not hold up is a `MalformedAnswer`. Secrets a server echoes back are
scrubbed by the `redact` the client passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..core.errors import MalformedAnswer
from ..core.task import is_safe_id
from . import fields


class JobStatus(StrEnum):
    """The API's words for where a job stands; a word not here means the job still runs."""

    QUEUED = "queued"
    IN_PROGRESS = "in-progress"
    FINALIZING = "finalizing"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELED = "canceled"


TERMINAL = frozenset({JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELED})


@dataclass(frozen=True, slots=True)
class Job:
    """The parts of a Scenario job batchgen uses, typed (unknown fields are ignored)."""

    id: str
    status: str
    progress: float = 0.0
    asset_ids: tuple[str, ...] = ()
    error: str | None = None
    cost: float | None = None  # billing.cuCost: the main action
    cost_details: Mapping[str, float] = field(default_factory=dict)  # billing.cuCostDetails: add-ons
    discount: float | None = None
    refundable: bool = True  # False when billing.disableRefund: a failure keeps its charge
    input: Mapping[str, Any] = field(default_factory=dict)
    output_entity: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def charge(self) -> float | None:
        """Creative units this job costs in all: the main action plus its add-ons."""
        if self.cost is None:
            return None
        return self.cost + sum(self.cost_details.values())

    @classmethod
    def parse(cls, data: Any, redact: Callable[[str], str] = lambda s: s, *, brief: bool = False) -> Job:
        """A job from an API answer (`{"job": {...}}` or the job itself); `MalformedAnswer` if unusable.

        `brief` reads only id, status and times of a job still running (what a poll needs).
        """
        job = data.get("job", data) if isinstance(data, dict) else None
        if not isinstance(job, dict):
            raise MalformedAnswer("answer holds no job object")
        # The API documents jobId; some responses and the SDK's models use id.
        job_id = job.get("jobId") or job.get("id")
        if not is_safe_id(job_id):
            raise MalformedAnswer("job without a usable jobId")
        status = fields.text(job.get("status"), 40) or "unknown"
        if brief and status not in TERMINAL:
            created, updated = fields.text(job.get("createdAt"), 64), fields.text(job.get("updatedAt"), 64)
            return cls(id=str(job_id), status=status, created_at=created, updated_at=updated)
        meta, billing = fields.mapping(job.get("metadata")), fields.mapping(job.get("billing"))
        output = fields.mapping(meta.get("output"))
        assets = meta.get("assetIds")
        error = fields.text(meta.get("error")) or fields.text(meta.get("hint"))
        progress = fields.number(job.get("progress"))
        return cls(
            id=str(job_id),
            status=status,
            progress=min(1.0, max(0.0, progress)) if progress is not None else 0.0,
            asset_ids=fields.asset_ids(assets),
            error=redact(error) if error else None,
            cost=fields.credits(billing.get("cuCost")),
            cost_details=fields.numbers(billing.get("cuCostDetails")),
            discount=fields.credits(billing.get("cuDiscount")),
            refundable=billing.get("disableRefund") is not True,
            input=fields.mapping(meta.get("input")),
            output_entity=output.get("entityId") if is_safe_id(output.get("entityId")) else None,
            created_at=fields.text(job.get("createdAt"), 64),
            updated_at=fields.text(job.get("updatedAt"), 64),
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """What a generate POST answered: the job, and the cost the API quoted."""

    job: Job
    cost: float | None
    discount: float | None = None
    cost_details: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Asset:
    """An asset's download URL and what the API says of its content."""

    id: str
    url: str
    mime_type: str
    size: int | None = None
    duration: float | None = None
    channels: int | None = None
    status: str = "success"
    checksum: str | None = None  # sha256 hex when the API gives one

    @classmethod
    def parse(cls, data: Any) -> Asset:
        asset = data.get("asset", data) if isinstance(data, dict) else None
        if not isinstance(asset, dict) or not is_safe_id(asset.get("id")):
            raise MalformedAnswer("answer holds no asset with a usable id")
        props = fields.mapping(asset.get("properties"))
        size, channels = fields.number(props.get("size")), fields.number(props.get("channels"))
        checksum = fields.text(props.get("sha256")) or fields.text(asset.get("sha256"))
        return cls(
            id=str(asset["id"]),
            url=fields.text(asset.get("url"), 8192) or "",
            mime_type=fields.text(asset.get("mimeType"), 100) or "application/octet-stream",
            size=int(size) if size is not None and size >= 0 else None,
            duration=fields.number(props.get("duration")),
            channels=int(channels) if channels is not None and channels > 0 else None,
            status=fields.text(asset.get("status"), 40) or "success",
            checksum=checksum.lower() if checksum and len(checksum) == 64 else None,
        )


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload as the API describes it (SDK `Upload`): its status and, once imported, its asset."""

    id: str
    status: str
    part_urls: tuple[str, ...] = ()
    entity_id: str | None = None  # the asset id, once imported
    job_id: str | None = None
    error: str | None = None

    @classmethod
    def parse(cls, data: Any, redact: Callable[[str], str] = lambda s: s) -> Upload:
        upload = data.get("upload", data) if isinstance(data, dict) else None
        if not isinstance(upload, dict) or not is_safe_id(upload.get("id")):
            raise MalformedAnswer("answer holds no upload with a usable id")
        urls = tuple(
            u
            for p in fields.items(upload.get("parts"))
            if isinstance(u := fields.mapping(p).get("url"), str) and u.startswith(("http://", "https://"))
        )
        error = fields.text(upload.get("errorMessage"))
        return cls(
            id=str(upload["id"]),
            status=fields.text(upload.get("status"), 40) or "unknown",
            part_urls=urls,
            entity_id=upload.get("entityId") if is_safe_id(upload.get("entityId")) else None,
            job_id=upload.get("jobId") if is_safe_id(upload.get("jobId")) else None,
            error=redact(error) if error else None,
        )


def iso(ts: float) -> str:
    """A wall-clock time as the API writes it (ISO 8601, UTC, milliseconds)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

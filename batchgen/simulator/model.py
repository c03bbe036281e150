"""What the simulator keeps: jobs, assets and uploads, and what a job costs."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

JOB_STATUSES = ("canceled", "failure", "finalizing", "in-progress", "pending", "queued", "success", "warming-up")

# Stand-in price list, not Scenario's: creative units per second of audio, by model.
CU_PER_SECOND = {"stereo-melody-large": 1.0, "stereo-large": 0.9, "melody-large": 0.7, "large": 0.6}
MBD_SURCHARGE = 1.25  # multi-band diffusion decodes more slowly


def output_format(body: dict[str, Any]) -> str:
    """The container a model's `outputFormat` asks for (ElevenLabs: `mp3_44100_128`, `opus_48000_64`, `wav_44100`)."""
    asked = body.get("outputFormat")
    if isinstance(asked, str) and asked.startswith(("mp3", "opus")):
        return asked.split("_", 1)[0]
    return "wav"


def seconds_of(model: str, body: dict[str, Any], default: float) -> float:
    """How long the simulator's stand-in output for a request is: its duration input, else speech's
    length from its text (about 15 characters a second), else the model's default."""
    for key in ("duration", "durationSeconds"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    text = body.get("text")
    if isinstance(text, str) and "tts" in model:
        return max(1.0, min(60.0, len(text) / 15))
    return default


def price(params: dict[str, Any]) -> float:
    """Creative units for one generation in the simulator's stand-in cost model."""
    model = params.get("modelVersion", "stereo-melody-large")
    duration = float(params.get("duration", 8))
    cost = duration * CU_PER_SECOND.get(model, 1.0)
    if params.get("multiBandDiffusion"):
        cost *= MBD_SURCHARGE
    return float(math.ceil(cost))


@dataclass(slots=True)
class SimAsset:
    id: str
    prompt: str
    seed: int
    duration: float
    channels: int
    data: bytes | None = None  # rendered on first use, then kept
    job: SimJob | None = None  # the generate job that makes it; None for uploads
    project: str | None = None
    created: float = 0.0
    # A continuation: the input asset and the region of it (seconds) the output begins with.
    source: tuple[str, float, float] | None = None
    key_seed: int | None = None  # key and tempo of what a continuation continues
    depth: int = 1  # which hop of a chain it is: 1, or one more than what it continues
    spoil: str | None = None  # the `bad_hop` fault's kind, when this output comes back wrong
    clean: bytes | None = None  # a spoiled output as it was made: what a continuation of it continues
    format: str = "wav"  # what the model's output format asks for: "wav", "mp3" or "opus"
    kind: str = "music"  # what the model makes: "music", "effects" or "speech"
    loop: bool = False  # the model's own `loop` input was true: the audio wraps seamlessly

    @property
    def mime(self) -> str:
        if self.spoil in ("mp3", "undecodable") or (self.spoil is None and self.format == "mp3"):
            return "audio/mpeg"
        return "audio/ogg" if self.spoil is None and self.format == "opus" else "audio/wav"

    @property
    def etag(self) -> str:
        assert self.data is not None
        return '"' + hashlib.sha256(self.data).hexdigest()[:20] + '"'


@dataclass(slots=True)
class SimUpload:
    id: str
    file_name: str
    size: object
    content_type: object
    created: float
    updated: float = 0.0
    status: str = "pending"
    part_url: str = ""
    data: bytes | None = None
    completed: float = 0.0  # loop time of `complete`
    asset_id: str | None = None
    job_id: str | None = None
    error: str | None = None
    project: str | None = None


@dataclass(slots=True)
class SimJob:
    id: str
    kind: str  # "generate" or "upload"
    params: dict[str, Any]
    created_wall: float
    started: float  # loop time
    job_time: float
    cost: float
    fails: bool = False
    refundable: bool = True
    error: str | None = None
    stuck: bool = False
    canceled: bool = False
    canceled_wall: float | None = None
    project: str | None = None
    discount: float = 0.0
    asset_ids: list[str] = field(default_factory=list)

    def status(self, now: float) -> tuple[str, float]:
        if self.canceled:
            return "canceled", 0.0
        elapsed = now - self.started
        t = elapsed / self.job_time if self.job_time > 0 else 1.0
        if self.stuck:
            t = min(t, 0.5)
        if t < 0.1:
            return "queued", 0.0
        if t < 0.9:
            return "in-progress", round((t - 0.1) / 0.8, 3)
        if t < 1.0:
            return "finalizing", 1.0
        return ("failure" if self.fails else "success"), 1.0

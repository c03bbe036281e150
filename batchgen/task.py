"""Task identity: what one generation is, its output name, its seed and its digest.

Pure functions only: these decide what a rerun skips, so they must be deterministic
across processes, Python versions and machines (no `hash()`, no dict-order reliance).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SEED_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Task:
    """One generation: a track, a take and a sweep/zip point, sent as one job."""

    name: str  # output name, also the task's identity in the journal
    track: str
    take: int
    params: Mapping[str, object]  # the request body; inputAudio holds the manifest's path
    digest: str  # hash of everything sent to the API
    model: str
    point: Mapping[str, object] = field(default_factory=dict)  # this task's sweep/zip values
    input_audio: str | None = None  # absolute path of a local inputAudio file
    audio_sha256: str | None = None  # its content hash, the upload cache key

    @property
    def seed(self) -> int:
        seed = self.params["seed"]
        assert isinstance(seed, int)
        return seed

    def body(self, asset_id: str | None = None) -> dict[str, object]:
        """The JSON body to POST, with a local inputAudio replaced by its uploaded asset."""
        body = dict(self.params)
        if self.input_audio is not None:
            body["inputAudio"] = asset_id
        return body


# One encoder for every call: json.dumps with options builds a new one each time,
# which was a third of the cost of expanding a 100,000-task manifest.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: object) -> str:
    """Stable JSON text for hashing: sorted keys, no whitespace, ints stay ints."""
    return _CANONICAL.encode(value)


def params_digest(model: str, params: Mapping[str, object], audio_sha256: str | None) -> str:
    """Hash of what is sent: model and body, with input audio by content, not path.

    Keyed by content so that moving a melody file changes nothing, and editing it in
    place marks its tasks `changed`.
    """
    sent = dict(params)
    if audio_sha256 is not None:
        sent["inputAudio"] = f"sha256:{audio_sha256}"
    text = canonical({"model": model, "params": sent})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def derive_seed(base: int, track: str, take: int, point: Mapping[str, object], point_text: str | None = None) -> int:
    """A task's seed from the batch's base seed, its track, take and sweep point.

    Depends on nothing else, so adding or removing a track changes no other seed.
    `point_text` is `canonical(point)` when the caller has it already.
    """
    if point_text is None:
        point_text = canonical(point) if point else ""
    key = f"{base}\x00{track}\x00{take}\x00{point_text}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & SEED_MAX


def format_value(value: object) -> str:
    """A parameter value as it appears in an output name: `0.8`, `2`, `true`."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return _UNSAFE.sub("_", text).strip("_")[:60] or "_"


def point_suffix(point: Mapping[str, object]) -> str:
    """The `-<param><value>` part of default output names for one sweep/zip point."""
    return "".join(f"-{key}{format_value(value)}" for key, value in point.items())


def default_name(track: str, take: int, takes: int, point: Mapping[str, object], suffix: str | None = None) -> str:
    """SPEC section 3: track name, `-t<k>` with several takes, `-<param><value>` per key."""
    take_part = f"-t{take}" if takes > 1 else ""
    return f"{track}{take_part}{point_suffix(point) if suffix is None else suffix}"


def is_safe_name(name: str) -> bool:
    """A name that stays inside the batch folder and is not hidden."""
    return bool(NAME_RE.fullmatch(name)) and not name.startswith(".") and len(name) <= 200

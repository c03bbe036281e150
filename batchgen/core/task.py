"""Task identity: what one generation is, its output name, its seed and its digest.

Pure functions only: these decide what a rerun skips, so they must be deterministic
across processes, Python versions and machines (no `hash()`, no dict-order reliance).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # chain planning builds on tasks: its types only, for the annotations
    from .chain import ChainSettings, Loop

NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
# Job, asset and upload ids go into URL paths: letters, digits and a few separators only.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SEED_MAX = 2**31 - 1
MAX_HOPS = 1000  # jobs in one chain (a long track or a loop); the journal refuses more


@dataclass(frozen=True, slots=True)
class HopPlan:
    """One job of a chained track: how long it asks for and which part of the last one it continues.

    Hop 1 is an ordinary job; hop k continues hop k-1's output from `continue_from`
    seconds to its end (`context` seconds), and adds `duration - context` new seconds.
    """

    duration: float
    seed: int
    continue_from: float | None = None  # None for the first hop
    context: float = 0.0


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A local file a task sends as an asset: uploaded once per batch (by content), then its id sent."""

    input: str  # the input it is sent as
    path: str  # absolute path on this machine
    sha256: str  # its content hash, the upload cache key
    index: int | None = None  # its place in a file_array input (None: a file input)


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
    hops: tuple[HopPlan, ...] = ()  # a long track or a loop: one per job, in order; empty for a plain job
    length: float | None = None  # seconds of the finished track (a loop's exact length)
    loop: Loop | None = None  # the track is cut to its bars and closed by a crossfade
    chain: ChainSettings | None = None  # the manifest's chain settings, for a shaped track
    file_input: str = "inputAudio"  # the input a local file (input_audio) is uploaded for
    duration_input: str = "duration"  # the input that says how long a job is
    prompt_input: str = "prompt"  # the input that holds the prompt
    schema_digest: str | None = None  # the schema the task was checked against: beside its identity, not in it
    # What decides the price (None: MusicGen's rule, every input but prompt and seed), and
    # the longest text of this task's length band, priced in its place (an upper bound).
    price_inputs: tuple[str, ...] | None = None
    price_text: str | None = None
    keeps_charge: bool = False  # the model's failed jobs are not refunded (its `disableRefund`)
    more_files: tuple[LocalFile, ...] = ()  # local files beyond input_audio (file_array items among them)

    @property
    def hop_count(self) -> int:
        return max(1, len(self.hops))

    @property
    def shaped(self) -> bool:
        """Made from hops into a long track or a loop (its jobs' files go to .batchgen/hops first)."""
        return bool(self.hops)

    @property
    def seed(self) -> int | None:
        """The seed sent, or None for a model that takes no seed."""
        seed = self.params.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def prompt(self) -> object:
        return self.params.get(self.prompt_input)

    @property
    def local_files(self) -> tuple[LocalFile, ...]:
        """Every local file the task uploads: input_audio first, then the others."""
        first = (
            () if self.input_audio is None else (LocalFile(self.file_input, self.input_audio, self.audio_sha256 or ""),)
        )
        return (*first, *self.more_files)

    def body(self, asset_id: str | None = None, uploads: Mapping[str, str] | None = None) -> dict[str, object]:
        """The JSON body to POST, each local file replaced by its uploaded asset.

        `asset_id` is input_audio's asset; `uploads` (sha256 -> asset id) gives the others'
        (None where a file is not uploaded yet).
        """
        body = dict(self.params)
        if self.input_audio is not None:
            body[self.file_input] = asset_id
        return with_files(body, self.more_files, lambda item: uploads.get(item.sha256) if uploads else None)

    def hop_body(
        self, hop: int, input_asset: str | None, uploads: Mapping[str, str] | None = None
    ) -> dict[str, object]:
        """The body of hop `hop` (0-based): hop 0 as `body`, later hops continue the previous one.

        `input_asset` is the uploaded inputAudio for hop 0, the previous hop's output after.
        """
        if not self.hops:
            return self.body(input_asset, uploads)
        plan = self.hops[hop]
        body = self.body(input_asset, uploads) if hop == 0 else dict(self.params)
        body[self.duration_input] = plan.duration
        if "seed" in self.params:
            body["seed"] = plan.seed
        if plan.continue_from is not None:
            body["inputAudio"] = input_asset
            body["continuation"] = True
            body["continuationStart"] = plan.continue_from
            body["continuationEnd"] = round(plan.continue_from + plan.context, 6)
        return body


def with_files(
    params: Mapping[str, object], local: Iterable[LocalFile], value: Callable[[LocalFile], object]
) -> dict[str, object]:
    """`params` with each local file's place (an input, or an item of a file_array) set to `value(file)`."""
    out = dict(params)
    for item in local:
        if item.index is None:
            out[item.input] = value(item)
            continue
        values = list(out[item.input])  # type: ignore[call-overload]  # a file_array: a list
        values[item.index] = value(item)
        out[item.input] = values
    return out


# One encoder for every call: json.dumps with options builds a new one each time,
# which was a third of the cost of expanding a 100,000-task manifest.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: object) -> str:
    """Stable JSON text for hashing: sorted keys, no whitespace, ints stay ints."""
    return _CANONICAL.encode(value)


def params_digest(
    model: str, params: Mapping[str, object], audio_sha256: str | None, shape: Mapping[str, object] | None = None
) -> str:
    """Hash of what is sent: model and body, with input audio by content, not path.

    Keyed by content so that moving a melody file changes nothing, and editing it in
    place marks its tasks `changed`. `shape` (length, loop, chain settings) is covered
    too: it is not sent, but it decides what the finished file is.
    """
    sent = dict(params)
    if audio_sha256 is not None:
        sent["inputAudio"] = f"sha256:{audio_sha256}"
    whole: dict[str, object] = {"model": model, "params": sent}
    if shape:
        whole["shape"] = dict(shape)
    text = canonical(whole)
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


def text_band(length: int) -> int:
    """The length band a text of `length` characters is priced in: the next power of two, 64 at least."""
    return max(64, 1 << max(0, length - 1).bit_length())


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


def is_safe_id(value: object) -> bool:
    """An id that is safe to put into a URL path (no '/', no '..', no spaces)."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None and ".." not in value


def is_safe_name(name: str) -> bool:
    """A name that stays inside the batch folder and is not hidden."""
    return bool(NAME_RE.fullmatch(name)) and not name.startswith(".") and len(name) <= 200

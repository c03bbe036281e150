"""Journal events: one frozen class per event, valid once built, and one encode/decode pair.

An event checks every field when it is constructed, whether by the code that records
it or by `decode` reading a journal line, so a bad field never reaches the disk and a
bad line never reaches a task's state (`BadEvent`, naming the field). `encode` writes
the line 0.1.0 and 0.2.0 wrote (`{"ev": kind, "t": time, "task": ..., fields, "n": seq}`),
so journals stay readable both ways; `decode` ignores fields it does not know.

Hops are numbered from 1 in events, as in the journal and in messages.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, NamedTuple

from .task import MAX_HOPS, is_safe_id, is_safe_name

MAX_TEXT = 2000  # longest reason or path kept in an event
MAX_FILES = 100  # files one task makes
MAX_ASSETS = 1000  # assets one job makes

_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATH_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}|\.batchgen")
_name_ok = functools.lru_cache(maxsize=1 << 18)(is_safe_name)  # a task's name is checked in each of its events
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


class BadEvent(ValueError):
    """An event whose fields do not hold up: never written, and skipped when read."""


# Field checks: each returns the value (normalised) or raises BadEvent naming the field.


def _text(value: object, key: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if type(value) is not str:
        raise BadEvent(f"{key} missing or not text")
    return value[:MAX_TEXT]


def _ident(value: object, key: str) -> str:
    if type(value) is not str or not is_safe_id(value):
        raise BadEvent(f"{key} missing or not a valid id")
    return value


def _number(value: object, key: str) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:  # type: ignore[arg-type, operator]
        raise BadEvent(f"{key} is not a non-negative number")
    return float(value)  # type: ignore[arg-type]


def _whole(value: object, key: str, least: int = 0, most: int = 10**9) -> int:
    if type(value) is not int or not least <= value <= most:  # `type`: True is not a number
        raise BadEvent(f"{key} missing or not a whole number from {least} to {most:,}")
    return value


def _flag(value: object, key: str) -> bool:
    if type(value) is not bool:
        raise BadEvent(f"{key} is not true or false")
    return value


def _file(value: object, key: str) -> Mapping[str, Any]:
    """A file in the batch folder as recorded: its path inside it, bytes and sha256 (and more, kept)."""
    if type(value) is not dict:
        raise BadEvent(f"{key} is not a file record")
    path = value.get("path")
    if type(path) is not str or len(path) > MAX_TEXT or not all(_PATH_PART.fullmatch(p) for p in path.split("/")):
        raise BadEvent(f"{key} has no valid path inside the batch folder")
    size, sha = value.get("bytes"), value.get("sha256")
    if type(size) is not int or size < 0:
        raise BadEvent(f"{key} has no valid byte count")
    if type(sha) is not str or len(sha) > 128:
        raise BadEvent(f"{key} has no valid sha256")
    return value


def _set(event: object, name: str, value: object) -> None:
    object.__setattr__(event, name, value)  # normalising a frozen event's field while it is built


# The events. Each checks its own fields in __post_init__.


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A fact about a batch, as the journal keeps it."""

    kind: ClassVar[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStarted(Event):
    """The journal's header: which batch it is, its journal version, its base seed."""

    kind = "batch"
    v: int
    batch: str | None = None
    base_seed: int | None = None
    version: str | None = None  # batchgen's version that wrote it

    def __post_init__(self) -> None:
        _whole(self.v, "v", least=1)
        if self.batch is not None and (type(self.batch) is not str or not is_safe_name(self.batch)):
            raise BadEvent("batch is not a valid batch name")
        if self.base_seed is not None:
            _whole(self.base_seed, "base_seed", most=2**32 - 1)
        _set(self, "version", _text(self.version, "version"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Uploaded(Event):
    """A local audio file is an asset of the API's (an upload imported)."""

    kind = "upload"
    sha256: str
    asset_id: str
    path: str | None = None

    def __post_init__(self) -> None:
        if type(self.sha256) is not str or not _HEX64.fullmatch(self.sha256):
            raise BadEvent("upload without a valid sha256")
        _ident(self.asset_id, "asset_id")
        _set(self, "path", _text(self.path, "path"))


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEvent(Event):
    """An event about one task."""

    task: str

    def __post_init__(self) -> None:
        if type(self.task) is not str or not _name_ok(self.task):
            raise BadEvent("event without a valid task name")


@dataclass(frozen=True, slots=True, kw_only=True)
class HopEvent(TaskEvent):
    """An event about one hop (one job) of a task; a plain task has only hop 1."""

    hop: int = 1

    def __post_init__(self) -> None:
        TaskEvent.__post_init__(self)
        _whole(self.hop, "hop", least=1, most=MAX_HOPS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent(HopEvent):
    """A POST is about to go out: from here until `Submitted`, a job may exist unknown."""

    kind = "intent"
    digest: str
    hops: int = 1
    attempt: int | None = None  # intents written for the task so far, this one included

    def __post_init__(self) -> None:
        HopEvent.__post_init__(self)
        _set(self, "digest", _text(self.digest, "digest", required=True))
        _whole(self.hops, "hops", least=1, most=MAX_HOPS)
        if self.hop > self.hops:
            raise BadEvent("hop is beyond hops")
        if self.attempt is not None:
            _whole(self.attempt, "attempt", least=1)


def _costs(discount: object, details: object) -> Mapping[str, float] | None:
    """A job's discount and cost breakdown checked; the breakdown as kept."""
    _number(discount, "discount")
    if details is None:
        return None
    if type(details) is not dict or len(details) > 40:
        raise BadEvent("cost_details is not a small mapping")
    for value in details.values():
        if type(value) not in (int, float) or not math.isfinite(value):
            raise BadEvent("cost_details holds a value that is not a number")
    return {str(k)[:60]: float(v) for k, v in details.items()}


def _detail(event: Submitted | Succeeded) -> None:
    _set(event, "cost_details", _costs(event.discount, event.cost_details))


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted(HopEvent):
    """The API answered the POST with a job (or a lookup found the job a lost answer made)."""

    kind = "submitted"
    job_id: str
    cost: float | None = None  # creative units quoted
    adopted: bool = False  # found by a lookup, not answered
    discount: float | None = None
    cost_details: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        HopEvent.__post_init__(self)
        _ident(self.job_id, "job_id")
        _number(self.cost, "cost")
        _flag(self.adopted, "adopted")
        _detail(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdrawn(HopEvent):
    """An intent whose POST was never sent (a stop, or a 429 that creates nothing)."""

    kind = "withdrawn"


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded(HopEvent):
    """A job succeeded: its assets are ready to download, and it is charged."""

    kind = "succeeded"
    job_id: str
    asset_ids: tuple[str, ...]
    cost: float | None = None
    discount: float | None = None
    cost_details: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        HopEvent.__post_init__(self)
        _ident(self.job_id, "job_id")
        ids = self.asset_ids
        if type(ids) not in (list, tuple) or len(ids) > MAX_ASSETS:
            raise BadEvent("asset_ids missing or not a list of ids")
        for item in ids:
            if type(item) is not str or not is_safe_id(item):
                raise BadEvent("asset_ids holds an invalid id")
        _set(self, "asset_ids", tuple(ids))
        _number(self.cost, "cost")
        _detail(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFailed(HopEvent):
    """A job failed (or is gone); unless `refunded` is false, it cost nothing."""

    kind = "job_failed"
    job_id: str
    reason: str | None = None
    refunded: bool = True
    cost: float | None = None  # what it kept, when not refunded

    def __post_init__(self) -> None:
        HopEvent.__post_init__(self)
        _ident(self.job_id, "job_id")
        _set(self, "reason", _text(self.reason, "reason"))
        _flag(self.refunded, "refunded")
        _number(self.cost, "cost")


@dataclass(frozen=True, slots=True, kw_only=True)
class HopDone(HopEvent):
    """A chain hop's output is on disk and checked."""

    kind = "hop_done"
    file: Mapping[str, Any]

    def __post_init__(self) -> None:
        HopEvent.__post_init__(self)
        _file(self.file, "file")


@dataclass(frozen=True, slots=True, kw_only=True)
class HopUnusable(HopEvent):
    """A chain hop landed and cannot be used: paid for, and to be made again (or the task fails)."""

    kind = "hop_unusable"
    job_id: str
    reason: str | None = None

    def __post_init__(self) -> None:
        HopEvent.__post_init__(self)
        _ident(self.job_id, "job_id")
        _set(self, "reason", _text(self.reason, "reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Done(TaskEvent):
    """The task's files (and sidecar) are on disk, complete and verified."""

    kind = "done"
    files: tuple[Mapping[str, Any], ...]
    digest: str | None = None
    sidecar: Mapping[str, Any] | None = None
    cost: float | None = None  # what the task cost, all its jobs together
    job_id: str | None = None  # the last hop's job

    def __post_init__(self) -> None:
        TaskEvent.__post_init__(self)
        made = self.files
        if type(made) not in (list, tuple) or not made or len(made) > MAX_FILES:
            raise BadEvent("files missing or not a list of files")
        _set(self, "files", tuple(_file(item, "files") for item in made))
        _set(self, "digest", _text(self.digest, "digest"))
        if self.sidecar is not None:
            _file(self.sidecar, "sidecar")
        _number(self.cost, "cost")
        if self.job_id is not None:
            _ident(self.job_id, "job_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed(TaskEvent):
    """The task failed for this run (or for good, when `permanent`)."""

    kind = "failed"
    reason: str = "failed"
    permanent: bool = False
    attempt: int | None = None  # the attempt it is about

    def __post_init__(self) -> None:
        TaskEvent.__post_init__(self)
        _set(self, "reason", _text(self.reason, "reason") or "failed")
        _flag(self.permanent, "permanent")
        if self.attempt is not None:
            _whole(self.attempt, "attempt")


@dataclass(frozen=True, slots=True, kw_only=True)
class Deferred(TaskEvent):
    """The run left the task as it is, for the next one (a lost answer, a failed download)."""

    kind = "deferred"
    reason: str = "left for the next run"

    def __post_init__(self) -> None:
        TaskEvent.__post_init__(self)
        _set(self, "reason", _text(self.reason, "reason") or "left for the next run")


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(TaskEvent):
    """A running job's progress, as 0.1.0 journaled it: informational, changes nothing."""

    kind = "status"


# The statuses a task or hop state may hold (`state.Status`, whose values these are).
STATUSES = frozenset({"new", "submitting", "in-flight", "downloading", "done", "failed"})
MAX_JOBS = 100_000  # jobs one task's state may name (every retry and redo of every hop)

_Check = Callable[[Any, str], object]


def _maybe(check: _Check) -> _Check:
    return lambda value, key: None if value is None else check(value, key)


def _one_of(allowed: frozenset[str]) -> _Check:
    def check(value: object, key: str) -> None:
        if value not in allowed:
            raise BadEvent(f"{key} is not one of {', '.join(sorted(allowed))}")

    return check


def _ids(most: int) -> _Check:
    def check(value: object, key: str) -> None:
        if type(value) is not list or len(value) > most:
            raise BadEvent(f"{key} is not a list of ids")
        for item in value:
            _ident(item, key)

    return check


def _record(doc: object, checks: Mapping[str, _Check], key: str) -> dict[str, Any]:
    """A state record: a mapping of known fields, each checked (absent ones are defaults)."""
    if type(doc) is not dict:
        raise BadEvent(f"{key} is not a state record")
    for name, value in doc.items():
        check = checks.get(name)
        if check is None:
            raise BadEvent(f"{key} holds {str(name)[:40]!r}, not a field of a state")
        try:
            check(value, name)  # the field's name alone: a message is made only for a bad one
        except BadEvent as bad:
            raise BadEvent(f"{key}.{bad}") from None
    return doc


def _cost_detail(value: object, key: str) -> None:
    if type(value) is not dict or not value.keys() <= {"discount", "costDetails"}:
        raise BadEvent(f"{key} is not a discount and cost breakdown")
    _costs(value.get("discount"), value.get("costDetails"))


_HOP_CHECKS: dict[str, _Check] = {
    "status": _one_of(STATUSES),
    "job_id": _maybe(_ident),
    "asset_ids": _ids(MAX_ASSETS),
    "failures": _whole,
    "redos": _whole,
    "cost": _number,
    "detail": _maybe(_cost_detail),
    "file": _maybe(_file),
}


def _hops(value: object, key: str) -> None:
    if type(value) is not list or not 1 <= len(value) <= MAX_HOPS:
        raise BadEvent(f"{key} is not a list of 1 to {MAX_HOPS:,} hops")
    for hop in value:
        if "status" not in _record(hop, _HOP_CHECKS, key):
            raise BadEvent(f"{key} has a hop without a status")


def _files(value: object, key: str) -> None:
    if type(value) is not list or len(value) > MAX_FILES:
        raise BadEvent(f"{key} is not a list of files")
    for item in value:
        _file(item, key)


def _charges(value: object, key: str) -> None:
    if type(value) is not dict:
        raise BadEvent(f"{key} is not a charge per job")
    for amount in value.values():
        if amount is None:
            raise BadEvent(f"{key} holds a charge that is not a number")
        _number(amount, key)


_STATE_CHECKS: dict[str, _Check] = {
    "digest": _text,
    "hops": _hops,
    "outcome": _maybe(_one_of(frozenset({"done", "failed"}))),
    "attempts": _whole,
    "intent_at": _number,
    "job_ids": _ids(MAX_JOBS),
    "charges": _charges,
    "kept": _number,
    "reason": _text,
    "deferred": _text,
    "permanent": _flag,
    "done_digest": _text,
    "files": _files,
    "sidecar": _maybe(_file),
    "updated": _number,
}


def _state_doc(doc: object) -> Mapping[str, Any]:
    """A task's whole state, every field checked as the events that make it check theirs."""
    state = _record(doc, _STATE_CHECKS, "state")
    if "hops" not in state:
        raise BadEvent("state.hops missing")
    if (charges := state.get("charges")) and not charges.keys() <= set(state.get("job_ids", ())):
        raise BadEvent("state.charges holds a charge for a job the task does not have")
    return state


@dataclass(frozen=True, slots=True, kw_only=True)
class Kept(TaskEvent):
    """A task's whole state at once: what a compaction writes in place of the lines that made it."""

    kind = "kept"
    state: Mapping[str, Any]

    def __post_init__(self) -> None:
        TaskEvent.__post_init__(self)
        _state_doc(self.state)


KINDS: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        BatchStarted,
        Uploaded,
        Intent,
        Submitted,
        Withdrawn,
        Succeeded,
        JobFailed,
        HopDone,
        HopUnusable,
        Done,
        Failed,
        Deferred,
        Progress,
        Kept,
    )
}


class _Shape(NamedTuple):
    names: tuple[str, ...]  # the fields, in the order they are written
    required: tuple[str, ...]
    falsy: frozenset[str]  # flags left out of a line while they are false, their default


def _shape(cls: type[Event]) -> _Shape:
    own = fields(cls)
    return _Shape(
        tuple(f.name for f in own),
        tuple(sorted(f.name for f in own if f.default is MISSING)),
        frozenset(f.name for f in own if f.default is False),
    )


_SHAPES = {cls: _shape(cls) for cls in KINDS.values()}


class Line(NamedTuple):
    """A journal line decoded: the event, when it was recorded, its sequence number."""

    event: Event
    t: float | None
    n: int | None


def encode(event: Event, *, t: float, n: int) -> bytes:
    """The journal line of `event`, recorded at wall time `t` as the `n`th of its journal."""
    doc: dict[str, Any] = {"ev": event.kind, "t": t}
    shape = _SHAPES[type(event)]
    for name in shape.names:
        value = getattr(event, name)
        if value is None or (value is False and name in shape.falsy):
            continue
        doc[name] = list(value) if type(value) is tuple else value
    doc["n"] = n
    return _ENCODER.encode(doc).encode() + b"\n"


def decode(doc: object) -> Line:
    """The event a journal line holds (already parsed as JSON). Raises `BadEvent` naming what is wrong."""
    if type(doc) is not dict:
        raise BadEvent("not an event")
    kind = doc.get("ev")
    cls = KINDS.get(kind) if type(kind) is str else None
    if cls is None:
        raise BadEvent(f"unknown event {str(kind)[:40]!r}")
    shape = _SHAPES[cls]
    for name in shape.required:
        if name not in doc:
            raise BadEvent(f"{name} missing" if name != "task" else "event without a valid task name")
    event = cls(**{name: doc[name] for name in shape.names if name in doc})
    t, n = doc.get("t"), doc.get("n")
    when = float(t) if (type(t) is float or type(t) is int) and math.isfinite(t) else None
    return Line(event, when, n if type(n) is int else None)


__all__ = [
    "KINDS",
    "MAX_TEXT",
    "STATUSES",
    "BadEvent",
    "BatchStarted",
    "Deferred",
    "Done",
    "Event",
    "Failed",
    "HopDone",
    "HopEvent",
    "HopUnusable",
    "Intent",
    "JobFailed",
    "Kept",
    "Line",
    "Progress",
    "Submitted",
    "Succeeded",
    "TaskEvent",
    "Uploaded",
    "Withdrawn",
    "decode",
    "encode",
]

"""`batchgen deliver`: the picked takes as finished files, at a loudness, tagged, listed.

Which takes: the picks (picks.json, as `serve` saved them), or every done take (`all`),
or the picks plus the first take of each track nobody picked (`fill`). Each becomes
`DIR/<track>.<ext>` (`DIR/<take>.<ext>` when a track delivers several), measured and,
when asked, gain-adjusted to a loudness with true peaks under a ceiling
(`loudness.py`), resampled, converted, and tagged (`tags.py`). `DIR/delivery.json`
and `DIR/delivery.csv` list what is there.

A rerun writes only what changed: each file's record holds a key made of its source's
sha256 and the options that shape it, and the sha256 of what was written. A file in
DIR that batchgen did not write, or that changed since, is never replaced without
`--force`; files batchgen delivered earlier and that are no longer selected are
removed, so DIR holds the delivery and nothing else.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..audio.mastering import Mastered
from ..audio.tags import Tags
from ..audio.wavfile import WavError
from ..core import text
from ..core.errors import BatchgenError, DiskError, UnsafeFileError, UsageError
from ..core.state import PlanStatus
from ..core.task import Task
from ..manifest.parse import Manifest, expand_as_recorded
from ..store import files
from ..store.ledger import Ledger
from ..store.lock import BatchLock
from .picks import Made, Picks, reconcile
from .picks import load as load_picks

PROCESS = 2  # bump when the processing changes, so a rerun makes every file again
DEFAULT_CEILING = -1.0  # dBTP
RECORD = "delivery.json"
LOCK = ".batchgen-delivery.lock"  # held while a deliver writes into the folder
LISTING = "delivery.csv"
CSV_COLUMNS = (
    "file",
    "track",
    "take",
    "prompt",
    "seed",
    "model",
    "jobId",
    "duration",
    "integratedLufs",
    "truePeakDbtp",
    "levelledBy",
    "target",
    "loopStart",
    "loopLength",
    "sha256",
)
EXTRA = "pip install 'batchgen[deliver]'"


class DeliverError(BatchgenError):
    """A delivery that cannot go ahead (nothing selected, a folder that is not ours)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Options:
    """What shapes the delivered files, and which takes go."""

    to: Path
    loudness: float | None = None  # LUFS; None: leave the level as it is
    true_peak: float | None = None  # dBTP ceiling as given; -1 goes with --loudness when none is given
    fmt: str | None = None  # wav, flac, ogg, opus, mp3; None: keep WAV and FLAC, other sources become WAV
    sample_rate: int | None = None
    select: str = "picks"  # "picks", "fill" or "all"
    force: bool = False
    quality: float | None = None  # Ogg Vorbis, 0..10
    bitrate: int | None = None  # Opus and MP3, kbps
    loop_fmt: str | None = None  # loops in this format instead (an engine preset's choice)
    allow_mp3_loops: bool = False  # MP3 cannot hold loop points: loops as MP3 only when asked
    preset: str | None = None  # the loudness preset's name, for the record
    engine: str | None = None  # the engine preset's name, for the record

    @property
    def ceiling(self) -> float | None:
        """The true-peak ceiling applied: as given, else -1 dBTP when levelling, else none."""
        if self.true_peak is not None:
            return self.true_peak
        return DEFAULT_CEILING if self.loudness is not None else None

    def key(self, source_sha256: str, fmt: str, loop: bool) -> str:
        shape = [PROCESS, source_sha256, fmt, self.loudness, self.ceiling, self.sample_rate, loop]
        if fmt in ("ogg", "opus", "mp3"):
            shape += [self.quality, self.bitrate]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:32]

    def format_for(self, source: Path, loop: bool) -> str:
        """The delivered format of a take: a loop's own choice, the one asked, else WAV or FLAC as it is."""
        if loop and self.loop_fmt is not None:
            return self.loop_fmt
        kept = source.suffix.lower().lstrip(".")
        return self.fmt or (kept if kept in ("wav", "flac") else "wav")


@dataclass(frozen=True, slots=True)
class Take:
    """A done take chosen for delivery, as the journal and its sidecar describe it."""

    task: Task
    source: Path
    sha256: str
    digest: str  # the digest the file was made under
    about: dict[str, Any]  # prompt, seed, model, jobId, track, take: from the sidecar


@dataclass(slots=True)
class Outcome:
    written: list[str]
    unchanged: list[str]
    removed: list[str]
    problems: list[str]
    warnings: list[str]


def require_extra() -> None:
    """One line saying what to install when numpy, scipy or soundfile is missing."""
    try:
        import numpy  # noqa: F401
        import scipy.signal  # noqa: F401
        import soundfile  # noqa: F401
    except (ImportError, OSError) as err:
        raise UsageError(f"deliver needs numpy, scipy and soundfile ({err}): {EXTRA}") from None


def deliver(manifest: Manifest, out: Path, options: Options, say: Callable[[str], None]) -> Outcome:
    """Deliver the selected takes of a batch into `options.to`; see the module docstring."""
    require_extra()
    folder = out / manifest.batch
    inside, to = folder.resolve(), options.to.resolve()
    if to == inside or inside in to.parents:
        raise DeliverError(f"--to {options.to} is in the batch folder {folder}; deliver into a folder of its own")
    ledger = Ledger.read(folder, manifest.batch)
    tasks = expand_as_recorded(manifest, ledger.base_seed)
    picks = load_picks(folder, manifest.batch)
    outcome = Outcome([], [], [], [], [*ledger.warnings, *picks.warnings])
    chosen = select(tasks, ledger, picks, options.select, outcome)
    if not chosen:
        raise DeliverError(
            f"{manifest.batch}: nothing to deliver: pick takes in `batchgen serve`, or use --fill or --all"
        )
    target = files.ensure_dir(options.to)
    with BatchLock(target / LOCK, "delivery folder", target):
        old = _read_record(target, options.force)
        names = _names(chosen)
        landing = Landing(target, manifest.batch, options, dict(old))
        records: dict[str, dict[str, Any]] = {}
        for take in chosen:
            try:
                record = _deliver_one(take, names[take.task.name], target, options, old, landing, outcome, say)
            except (BatchgenError, WavError) as err:  # WavError: a take this module cannot read
                outcome.problems.append(f"{take.task.name}: {err}")
                continue
            records[record["file"]] = record
        _remove_stale(target, old, set(records), outcome, say)
        _write_record(target, manifest.batch, options, records, listing=True)
    return outcome


@dataclass(slots=True)
class Landing:
    """delivery.json as a delivery goes: every file's record is on disk before the file lands."""

    target: Path
    batch: str
    options: Options
    records: dict[str, dict[str, Any]]  # the earlier delivery's, then each file's as it is written

    def about_to_land(self, record: dict[str, Any], replaces: str | None) -> None:
        """Record a file before it is renamed into place, with the hash of what it replaces: a kill
        between the two leaves a record that recognises whichever of the two is there."""
        self.records[record["file"]] = {**record, "replaces": replaces} if replaces else record
        _write_record(self.target, self.batch, self.options, self.records)


def select(tasks: Sequence[Task], ledger: Ledger, picks: Picks, mode: str, outcome: Outcome) -> list[Take]:
    """The takes to deliver, in manifest order; a pick whose take was made again since is not one."""
    present = ledger.files_present()
    done: dict[str, Take] = {}
    for task in tasks:
        st = ledger.state(task.name)
        status = ledger.plan(task, present)
        if st is None or not st.files or status not in (PlanStatus.DONE, PlanStatus.CHANGED):
            if status is PlanStatus.MISSING:
                outcome.problems.append(f"{task.name}: its file is missing; `batchgen run` fetches it again")
            continue
        record = st.files[0]
        about = _sidecar(ledger.folder, st.sidecar, outcome)
        sha, digest = str(record.get("sha256", "")), st.done_digest or ""
        done[task.name] = Take(task, ledger.folder / record["path"], sha, digest, about)
    made = {name: Made(take.task.track, take.digest, take.sha256) for name, take in done.items()}
    for name in reconcile(picks, made):
        outcome.warnings.append(f"{name}: made again since it was picked; pick it again in `batchgen serve`")
    if mode == "all":
        return list(done.values())
    picked = set(picks.picked())
    chosen = [take for name, take in done.items() if name in picked]
    if mode == "fill":
        covered = {take.task.track for take in chosen}
        rejected = {name for name, mark in picks.marks.items() if mark.state == "rejected"}
        for name, take in done.items():
            if take.task.track not in covered and name not in rejected:
                covered.add(take.task.track)
                chosen.append(take)
        order = {task.name: i for i, task in enumerate(tasks)}
        chosen.sort(key=lambda take: order[take.task.name])
    return chosen


def _sidecar(folder: Path, sidecar: dict[str, Any] | None, outcome: Outcome) -> dict[str, Any]:
    """What the sidecar says of the file (the truth about it, even if the manifest changed since)."""
    if sidecar is None:
        return {}
    try:
        data = text.loads(files.read_regular(folder / sidecar["path"], 8 * 1024 * 1024) or b"{}")
    except (BatchgenError, ValueError, KeyError, RecursionError):
        outcome.warnings.append(f"{sidecar.get('path')}: unreadable sidecar; tags come from the manifest")
        return {}
    return _about(data) if isinstance(data, dict) else {}


_ABOUT = {"track": str, "take": int, "prompt": str, "seed": int, "model": str, "jobId": str}


def _about(data: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's fields deliver uses, each only when it has its type (a sidecar is input too)."""
    out = {
        key: value
        for key, kind in _ABOUT.items()
        if isinstance(value := data.get(key), kind) and not isinstance(value, bool)
    }
    timings = data.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("finishedAt"), str):
        out["finishedAt"] = timings["finishedAt"]
    return out


def _names(chosen: Sequence[Take]) -> dict[str, str]:
    """`<track>` for a track that delivers one file, `<take>` for each of a track's several."""
    per_track: dict[str, int] = {}
    for take in chosen:
        per_track[take.task.track] = per_track.get(take.task.track, 0) + 1
    return {t.task.name: t.task.track if per_track[t.task.track] == 1 else t.task.name for t in chosen}


def _deliver_one(
    take: Take,
    stem: str,
    target: Path,
    options: Options,
    old: dict[str, Any],
    landing: Landing,
    outcome: Outcome,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One take into one file: skipped when the same source and options made what is there."""
    loop = is_loop(take.task)
    ext = options.format_for(take.source, loop)
    if loop and ext == "mp3" and not options.allow_mp3_loops:
        raise DeliverError(
            "a loop cannot be delivered as MP3: MP3 has no loop points and most decoders pad its start, "
            "so it would not loop seamlessly; wav, flac, ogg or opus, or --allow-mp3-loops"
        )
    name = f"{stem}.{ext}"
    key = options.key(take.sha256, ext, loop)
    before = old.get(name)
    path = target / name
    current = _sha256_of(path)
    if before is not None and before.get("key") == key and current == before.get("sha256"):
        outcome.unchanged.append(name)
        return {k: v for k, v in before.items() if k != "replaces"}
    ours = (before.get("sha256"), before.get("replaces")) if before is not None else ()
    if current is not None and not options.force and current not in ours:
        raise DeliverError(f"{path} exists and batchgen did not write it (or it changed since); --force replaces it")
    if _sha256_of(take.source) != take.sha256:
        raise DeliverError(f"{take.source.name} is not the file the run made (sha256 differs); run the batch again")
    from ..audio.mastering import Settings, master

    settings = Settings(
        options.loudness, options.ceiling, options.sample_rate, ext, options.quality, options.bitrate, loop
    )
    made = master(take.source, settings, _tags(take), int(take.sha256[:16] or "0", 16))
    record = _record(take, name, key, hashlib.sha256(made.data).hexdigest(), made)
    landing.about_to_land(record, current)
    files.write_atomic(path, made.data, durable=True)
    outcome.written.append(name)
    say(_line(name, made.measured))
    return record


def is_loop(task: Task) -> bool:
    """A take made to loop: batchgen's cut loop (bars at a tempo), or the model's own `loop: true`."""
    return task.loop is not None or task.params.get("loop") is True


def _tags(take: Take) -> Tags:
    """The file's tags from its sidecar (what was really asked for it), the manifest as a fallback."""
    about, task = take.about, take.task
    made = about.get("finishedAt") or time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    seed = about.get("seed", task.seed)
    return Tags(
        title=about.get("track", task.track),
        prompt=about.get("prompt", str(task.prompt or "")),
        software=f"batchgen {__version__}",
        date=made[:10],
        time=made[11:19],
        seed=seed if isinstance(seed, int) else None,
        model=about.get("model", task.model),
        job_id=about.get("jobId", ""),
    )


def _line(name: str, measured: dict[str, Any]) -> str:
    clip = measured.get("levelledBy") == "clip"
    lufs, peak = measured.get("clipLufs" if clip else "integratedLufs"), measured.get("truePeakDbtp")
    level = f"{lufs:.1f} LUFS{' (short clip)' if clip else ''}" if lufs is not None else "silent"
    return f"wrote {name} ({level}, true peak {peak if peak is not None else '-inf'} dBTP)"


def _record(take: Take, name: str, key: str, sha: str, made: Mastered) -> dict[str, Any]:
    about = take.about
    loop = {"loopStart": 0, "loopLength": made.frames} if is_loop(take.task) else {}
    return {
        "file": name,
        "track": about.get("track", take.task.track),
        "take": about.get("take", take.task.take),
        "task": take.task.name,
        "prompt": about.get("prompt", take.task.prompt),
        "seed": about.get("seed", take.task.seed),
        "model": about.get("model", take.task.model),
        "jobId": about.get("jobId"),
        "duration": round(made.seconds, 4),
        "frames": made.frames,
        "sampleRate": made.rate,
        **made.measured,
        **loop,
        "sha256": sha,
        "source": {"file": take.source.name, "sha256": take.sha256},
        "key": key,
    }


def _sha256_of(path: Path) -> str | None:
    """sha256 of a regular file (never a symlink's target); None when there is none."""
    try:
        fh = files.open_regular(path)  # O_NONBLOCK: a FIFO under a delivered name cannot hang us
    except UnsafeFileError as err:
        raise DeliverError(f"{err} (a symlink, pipe or device is never followed or replaced)") from None
    except DiskError as err:
        if err.errno == errno.ENOENT:
            return None
        raise DeliverError(str(err)) from None
    with fh:
        sha = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
        return sha.hexdigest()


def _read_record(target: Path, force: bool) -> dict[str, Any]:
    """What an earlier delivery into `target` wrote, by file name."""
    try:
        data = files.read_regular(target / RECORD, 64 * 1024 * 1024)
    except BatchgenError as err:
        raise DeliverError(str(err)) from None
    if data is None:
        return {}
    try:
        doc = text.loads(data)
        entries = doc["files"] if doc.get("writer") == "batchgen" else None
        if not isinstance(entries, list):
            raise ValueError("not a batchgen delivery")
        return {e["file"]: e for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        if force:
            return {}
        raise DeliverError(f"{target / RECORD} is not batchgen's; --force replaces it") from None


def _remove_stale(
    target: Path, old: dict[str, Any], keep: set[str], outcome: Outcome, say: Callable[[str], None]
) -> None:
    """Files an earlier delivery wrote that are no longer selected, and are as it left them."""
    for name, entry in old.items():
        if name in keep or not name or "/" in name or "\0" in name or name.startswith("."):
            continue  # kept, or not a plain file name of this folder (the record is input too)
        path = target / name
        try:
            current = _sha256_of(path)
        except DeliverError:
            continue
        if current is not None and current == entry.get("sha256"):
            files.unlink_quietly(path)
            outcome.removed.append(name)
            say(f"removed {name} (no longer selected)")
        elif current is not None:
            outcome.warnings.append(f"{name}: no longer selected, but changed since it was delivered: left alone")


def _write_record(
    target: Path, batch: str, options: Options, records: dict[str, dict[str, Any]], *, listing: bool = False
) -> None:
    """delivery.json (everything, for tools and the next rerun) and, at the end, delivery.csv (for people)."""
    listed = sorted(records.values(), key=lambda r: str(r["file"]))
    doc = {
        "writer": "batchgen",
        "version": __version__,
        "batch": batch,
        "deliveredAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": {
            "preset": options.preset,
            "for": options.engine,
            "loudness": options.loudness,
            "truePeak": options.true_peak,
            "format": options.fmt,
            "loopFormat": options.loop_fmt,
            "quality": options.quality,
            "bitrate": options.bitrate,
            "sampleRate": options.sample_rate,
            "select": options.select,
        },
        "files": listed,
    }
    files.write_atomic(target / RECORD, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())
    if not listing:
        return
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in listed:
        writer.writerow([_cell(record.get(column)) for column in CSV_COLUMNS])
    files.write_atomic(target / LISTING, text.getvalue().encode("utf-8"))


def _cell(value: object) -> str:
    """A CSV cell; text a spreadsheet would run as a formula is prefixed with a quote."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


__all__ = ["DeliverError", "Options", "Outcome", "deliver", "is_loop", "require_extra", "select"]

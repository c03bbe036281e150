"""YAML manifest -> validated `Manifest` -> list of `Task`s.

`load` does the file reading (the manifest, a `tracks_file`, hashing input audio) and
validates everything it can per field; `expand` is pure and applies the rules that need
whole tasks (cross-field rules, output names). Every error is a `ManifestError` naming
file, line and field, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import stat
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.chain import ChainSettings, Loop, hop_count, plan
from ..core.errors import ManifestError, UnsafeFileError, quote
from ..core.gcpause import paused_gc
from ..core.params import MODEL_ID, PARAMS, check_combination, check_value, nearest
from ..core.task import (
    MAX_HOPS,
    Task,
    canonical,
    default_name,
    derive_seed,
    format_value,
    is_safe_id,
    is_safe_name,
    params_digest,
    point_suffix,
)
from ..core.text import loads as load_json
from ..store import files
from .yamldoc import LineDict, LineList, YamlError
from .yamldoc import load as load_yaml

TOP_KEYS = (
    "batch",
    "model",
    "project",
    "defaults",
    "takes",
    "seed",
    "tracks",
    "tracks_file",
    "sweep",
    "zip",
    "filename",
    "chain",
)
# `length` and `loop` shape the finished track; they go anywhere a parameter can but are
# never sent to the API (a chain of jobs, or a loop cut, makes them).
SHAPES = ("length", "loop")
KNOWN = (*PARAMS, *SHAPES)
TRACK_KEYS = ("name", "takes", "seed", *KNOWN)
MAX_LENGTH = 3600.0  # seconds of one finished track
MAX_JOB = 30  # seconds one job can make
LOOP_KEYS = ("bpm", "bars", "beats_per_bar")
MAX_TAKES = 1000
MAX_TASKS = 1_000_000
MAX_FILE_BYTES = 256 * 1024 * 1024  # a manifest or tracks_file larger than this is refused
# Text the expansion may produce in all (every task's prompt and other text parameters):
# takes, sweeps and aliases multiply a manifest's text, and every task's text is written
# again into its sidecar and the listening page.
MAX_EXPANDED_TEXT = 256 * 1024 * 1024
_ASSET_ID = re.compile(r"asset_[A-Za-z0-9_-]+")
Axes = tuple[tuple[str, tuple[object, ...]], ...]  # sweep or zip: (parameter, values) pairs


@dataclass(frozen=True, slots=True)
class Track:
    """One entry of `tracks`: its own parameters (prompt included) and where it was written."""

    name: str
    params: Mapping[str, object]
    takes: int
    seed: int | None
    source: str  # file the track came from (the manifest or its tracks_file)
    line: int | None
    lines: Mapping[str, int] = field(default_factory=dict)  # line of each key the track sets

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key, self.line)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest, before expansion into tasks."""

    path: str
    batch: str
    model: str
    defaults: Mapping[str, object]
    tracks: tuple[Track, ...]
    seed: int | None = None
    sweep: tuple[tuple[str, tuple[object, ...]], ...] = ()
    zip: tuple[tuple[str, tuple[object, ...]], ...] = ()
    filename: str | None = None
    project: str | None = None  # Scenario projectId for every request (wins over SCENARIO_PROJECT_ID)
    chain: ChainSettings = field(default_factory=ChainSettings)  # how long tracks and loops are chained
    # local inputAudio as written -> (absolute path, sha256 of its content)
    audio: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    lines: Mapping[str, int] = field(default_factory=dict)

    def task_count(self) -> int:
        points = _product_size(self.sweep) * (len(self.zip[0][1]) if self.zip else 1)
        return sum(t.takes for t in self.tracks) * points


def load(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file and the files it names."""
    with paused_gc():
        return _Reader(Path(path)).read()


class _Reader:
    """One manifest read: keeps the file name for every error it raises."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.audio: dict[str, tuple[str, str]] = {}

    def fail(self, line: int | None, field: str | None, message: str, *, source: str | None = None) -> ManifestError:
        return ManifestError(source or self.name, line, field, message)

    def read(self) -> Manifest:
        text = self._text(self.path, None, None, self.name, "manifest")
        doc = self._parse_yaml(text, self.name)
        if not isinstance(doc, LineDict):
            raise self.fail(
                getattr(doc, "line", 1), None, "the manifest must be a mapping of keys (batch, tracks, ...)"
            )
        for key in doc:
            if key not in TOP_KEYS:
                raise self.fail(doc.lines[key], key, f"unknown key{_hint(key, TOP_KEYS)}")
        batch = self._name(doc, "batch", required=True)
        model = doc.get("model", MODEL_ID)
        if model != MODEL_ID:
            raise self.fail(doc.lines.get("model"), "model", f"only {MODEL_ID} is supported, not {quote(model)}")
        defaults = self._params(doc, "defaults", allow_seed=False)
        takes = self._int(doc, "takes", 1, 1, MAX_TAKES)
        seed = self._seed(doc, "seed")
        sweep, zipped = self._sweep_and_zip(doc)
        tracks = [
            self._track(item, line, takes, self.name) for item, line in _items(doc.get("tracks"), doc, "tracks", self)
        ]
        if "tracks_file" in doc:
            tracks.extend(self._tracks_file(doc, takes))
        if not tracks:
            raise self.fail(
                doc.lines.get("tracks", doc.line), "tracks", "at least one track is required (tracks or tracks_file)"
            )
        self._check_tracks(tracks, {key for key, _ in (*sweep, *zipped)})
        filename = doc.get("filename")
        if filename is not None:
            self._check_template(filename, doc.lines["filename"])
        manifest = Manifest(
            path=self.name,
            batch=batch,
            model=model,
            defaults=defaults,
            tracks=tuple(tracks),
            seed=seed,
            sweep=sweep,
            zip=zipped,
            filename=filename,
            project=self._project(doc),
            chain=self._chain(doc),
            audio=self.audio,
            lines=dict(doc.lines),
        )
        count = manifest.task_count()
        if count > MAX_TASKS:
            raise self.fail(doc.line, None, f"expands to {count:,} tasks, more than the limit of {MAX_TASKS:,}")
        return manifest

    def _chain(self, doc: LineDict) -> ChainSettings:
        block = doc.get("chain")
        if block is None:
            return ChainSettings()
        if not isinstance(block, LineDict):
            raise self.fail(doc.lines["chain"], "chain", "must be a mapping like {context: 10, crossfade: 0.05}")
        values: dict[str, float] = {}
        for key, value in block.items():
            line = block.lines[key]
            if key not in ("context", "crossfade"):
                raise self.fail(line, f"chain.{key}", f"unknown key{_hint(key, ('context', 'crossfade'))}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise self.fail(line, f"chain.{key}", f"must be a number of seconds, not {quote(value)}")
            values[key] = float(value)
        settings = ChainSettings(**values)
        if not 1 <= settings.context <= 29:
            raise self.fail(block.lines.get("context"), "chain.context", "must be from 1 to 29 seconds")
        if not 0.001 <= settings.crossfade <= min(2.0, settings.context / 2):
            message = f"must be from 0.001 to {min(2.0, settings.context / 2):g} seconds (half the context at most)"
            raise self.fail(block.lines.get("crossfade"), "chain.crossfade", message)
        return settings

    def _project(self, doc: LineDict) -> str | None:
        value = doc.get("project")
        if value is None:
            return None
        if not is_safe_id(value):
            raise self.fail(doc.lines["project"], "project", f"{quote(value)} is not a Scenario project id")
        return str(value)

    def _sweep_and_zip(self, doc: LineDict) -> tuple[Axes, Axes]:
        sweep = self._axes(doc, "sweep")
        zipped = self._axes(doc, "zip")
        if zipped:
            lengths = {key: len(values) for key, values in zipped}
            if len(set(lengths.values())) > 1:
                shown = ", ".join(f"{k}={n}" for k, n in lengths.items())
                raise self.fail(doc.lines["zip"], "zip", f"lists must have equal lengths, got {shown}")
        for key, _ in zipped:
            if key in dict(sweep):
                raise self.fail(doc["zip"].lines[key], f"zip.{key}", "is also in sweep; put it in one of them")
        return sweep, zipped

    def _check_tracks(self, tracks: list[Track], varied: set[str]) -> None:
        """Track names are unique (ignoring case), and no track sets what sweep or zip varies."""
        seen: dict[str, Track] = {}
        for track in tracks:
            if (first := seen.get(track.name.lower())) is not None:
                message = f"duplicate track name {quote(track.name)} (first at line {first.line})"
                raise self.fail(track.line, "name", message, source=track.source)
            seen[track.name.lower()] = track
            for key in varied & set(track.params):
                message = "is set by the track and varied by sweep/zip; remove one"
                raise self.fail(track.line_of(key), key, message, source=track.source)

    def _parse_yaml(self, text: str, name: str) -> Any:
        try:
            return load_yaml(text)
        except YamlError as err:
            raise ManifestError(name, err.line, err.key, str(err)) from None

    def _text(self, path: Path, line: int | None, field: str | None, source: str, what: str) -> str:
        """A text file the manifest reads: regular files only (a FIFO or device would hang), bounded."""
        try:
            data = files.read_regular(path, MAX_FILE_BYTES, follow=True)
        except UnsafeFileError as err:
            problem = str(err).split(": ", 1)[-1]
            raise self.fail(line, field, f"{what} {quote(path.name)} {problem}", source=source) from None
        except OSError as err:
            raise self.fail(
                line, field, f"cannot read {what} {quote(path.name)}: {err.strerror}", source=source
            ) from None
        if data is None:
            if line is None:
                raise self.fail(None, None, f"no such {what} file", source=source)
            message = f"file {quote(path.name)} not found (looked at {path.resolve()})"
            raise self.fail(line, field, message, source=source)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise self.fail(line, field, f"{what} is not UTF-8 text (byte {err.start})", source=source) from None

    def _name(self, doc: LineDict, key: str, *, required: bool, source: str | None = None) -> str:
        value = doc.get(key)
        line = doc.lines.get(key, doc.line)
        if value is None:
            if required:
                raise self.fail(line, key, "is required", source=source)
            return ""
        if not isinstance(value, str):
            raise self.fail(line, key, f"must be a string, not {quote(value)}", source=source)
        if not is_safe_name(value):
            raise self.fail(
                line,
                key,
                f"{quote(value)} must use only letters, digits, '.', '_', '-' and not start with '.'",
                source=source,
            )
        return value

    def _int(self, doc: LineDict, key: str, default: int, low: int, high: int, source: str | None = None) -> int:
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(doc.lines.get(key), key, f"must be a whole number, not {quote(value)}", source=source)
        if not low <= value <= high:
            raise self.fail(doc.lines.get(key), key, f"must be between {low} and {high}, not {value}", source=source)
        return value

    def _seed(self, doc: LineDict, key: str, source: str | None = None) -> int | None:
        if doc.get(key) is None:
            return None
        value = doc[key]
        if problem := check_value("seed", value):
            raise self.fail(doc.lines.get(key), key, problem, source=source)
        seed = int(value)
        return None if seed == -1 else seed  # -1 is the API's "random": derive one instead

    def _params(self, doc: LineDict, key: str, *, allow_seed: bool) -> dict[str, object]:
        block = doc.get(key)
        if block is None:
            return {}
        if not isinstance(block, LineDict):
            raise self.fail(doc.lines[key], key, "must be a mapping of parameter: value")
        out: dict[str, object] = {}
        for name, value in block.items():
            line = block.lines[name]
            if name == "seed" and not allow_seed:
                raise self.fail(line, f"{key}.seed", "set the base seed with the top-level `seed:` instead")
            if name not in KNOWN:
                raise self.fail(line, f"{key}.{name}", f"unknown parameter{_hint(name, KNOWN)}")
            out[name] = self._value(name, value, line, f"{key}.{name}", self.name)
        return out

    def _value(self, name: str, value: object, line: int | None, where: str, source: str) -> object:
        if name in SHAPES:
            shaped, problem = _shape_value(name, value)
            if problem:
                raise self.fail(line, where, problem, source=source)
            return shaped
        if problem := check_value(name, value):
            raise self.fail(line, where, problem, source=source)
        if name == "inputAudio":
            assert isinstance(value, str)
            return self._audio(value, line, where, source)
        if PARAMS[name].type is int:
            return int(value)  # type: ignore[call-overload]
        return value

    def _audio(self, value: str, line: int | None, where: str, source: str) -> str:
        if value in self.audio:
            return value
        local = (self.path.parent / value).resolve()
        if not local.exists() and _ASSET_ID.fullmatch(value):
            return value  # an asset already on the account: sent as is
        try:
            digest = audio_digest(local)
        except FileNotFoundError:
            raise self.fail(
                line, where, f"input audio file {quote(value)} not found (looked at {local})", source=source
            ) from None
        except (OSError, ValueError) as err:
            problem = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise self.fail(line, where, f"input audio {quote(value)}: {problem}", source=source) from None
        self.audio[value] = (str(local), digest)
        return value

    def _axes(self, doc: LineDict, key: str) -> Axes:
        block = doc.get(key)
        if block is None:
            return ()
        if not isinstance(block, LineDict) or not block:
            raise self.fail(doc.lines[key], key, "must be a mapping of parameter: [values]")
        axes = []
        for name, values in block.items():
            line, where = block.lines[name], f"{key}.{name}"
            if name not in KNOWN:
                raise self.fail(line, where, f"unknown parameter{_hint(name, KNOWN)}")
            if not isinstance(values, list) or not values:
                raise self.fail(line, where, "must be a non-empty list of values")
            item_lines = getattr(values, "lines", [line] * len(values))
            checked = tuple(
                self._value(name, v, ln, where, self.name) for v, ln in zip(values, item_lines, strict=True)
            )
            if len({format_value(v) for v in checked}) != len(checked):
                raise self.fail(line, where, "lists the same value twice")
            axes.append((name, checked))
        return tuple(axes)

    def _track(self, item: object, line: int | None, takes: int, source: str) -> Track:
        if not isinstance(item, LineDict):
            raise self.fail(line, "tracks", "each track must be a mapping with name and prompt", source=source)
        params: dict[str, object] = {}
        for key, value in item.items():
            key_line = item.lines.get(key, line)
            if key not in TRACK_KEYS:
                raise self.fail(key_line, key, f"unknown key{_hint(key, TRACK_KEYS)}", source=source)
            if key in ("name", "takes", "seed"):
                continue
            params[key] = self._value(key, value, key_line, key, source)
        name = self._name(item, "name", required=True, source=source)
        return Track(
            name=name,
            params=params,
            takes=self._int(item, "takes", takes, 1, MAX_TAKES, source=source),
            seed=self._seed(item, "seed", source=source),
            source=source,
            line=item.line or line,
            lines=item.lines,
        )

    def _tracks_file(self, doc: LineDict, takes: int) -> list[Track]:
        value, line = doc["tracks_file"], doc.lines["tracks_file"]
        if not isinstance(value, str):
            raise self.fail(line, "tracks_file", "must be a file path")
        path = self.path.parent / value
        source = str(path)
        text = self._text(path, line, "tracks_file", self.name, "tracks_file")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            rows = self._csv_rows(text, source)
        elif suffix == ".jsonl":
            rows = self._jsonl_rows(text, source)
        elif suffix in (".yaml", ".yml"):
            items = self._parse_yaml(text, source)
            if not isinstance(items, LineList):
                raise self.fail(getattr(items, "line", 1), None, "must be a YAML list of tracks", source=source)
            rows = list(zip(items, items.lines, strict=True))
        else:
            raise self.fail(line, "tracks_file", f"{quote(value)} must end in .csv, .jsonl, .yaml or .yml")
        return [self._track(item, row_line, takes, source) for item, row_line in rows]

    def _csv_rows(self, text: str, source: str) -> list[tuple[LineDict, int]]:
        import csv  # only manifests with a CSV tracks_file need it

        reader = csv.reader(text.splitlines())
        try:
            return self._csv_table(reader, source)
        except csv.Error as err:  # e.g. a cell past the csv module's 128 KB field limit
            raise self.fail(reader.line_num or 1, None, f"unreadable CSV ({err})", source=source) from None

    def _csv_table(self, reader: Any, source: str) -> list[tuple[LineDict, int]]:
        header = next(reader, None)
        if not header or "name" not in header:
            raise self.fail(1, None, "the CSV header must start with name,prompt,<param>...", source=source)
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            twice = next(h for h in header if header.count(h) > 1)
            raise self.fail(1, twice, "the CSV header names this column twice", source=source)
        columns = [(key, _coercer(key)) for key in header]
        rows = []
        for cells in reader:
            row_line = reader.line_num
            if len(cells) != len(header):
                if not any(c.strip() for c in cells):
                    continue
                raise self.fail(row_line, None, f"row has {len(cells)} cells, header has {len(header)}", source=source)
            item = LineDict()
            lines: dict[str, int] = {}
            item.line, item.lines = row_line, lines
            for (key, coerce), cell in zip(columns, cells, strict=True):
                cell = cell.strip()
                if cell:  # an empty cell leaves the parameter to the defaults
                    item[key] = coerce(cell)
                    lines[key] = row_line
            rows.append((item, row_line))
        return rows

    def _jsonl_rows(self, text: str, source: str) -> list[tuple[LineDict, int]]:
        rows = []
        for row_line, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = load_json(raw)
            except json.JSONDecodeError as err:
                raise self.fail(row_line, None, f"invalid JSON: {err.msg}", source=source) from None
            except RecursionError:
                raise self.fail(row_line, None, "JSON nested too deeply", source=source) from None
            if not isinstance(obj, dict):
                raise self.fail(row_line, None, "each line must be a JSON object", source=source)
            item = LineDict(obj)
            item.line, item.lines = row_line, dict.fromkeys(obj, row_line)
            rows.append((item, row_line))
        return rows

    def _check_template(self, template: object, line: int) -> None:
        if not isinstance(template, str) or not template:
            raise self.fail(line, "filename", "must be a non-empty template string like '{track}-{take}'")
        fields = ("track", "take", "seed", *PARAMS)
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as err:
            raise self.fail(line, "filename", f"bad template: {err}") from None
        for literal, name, spec, _conv in parsed:
            if spec and (problem := _spec_problem(spec)):
                raise self.fail(line, "filename", f"format spec {quote(spec)} {problem}")
            if "/" in literal or "\\" in literal or ".." in literal:
                raise self.fail(line, "filename", f"{quote(template)} would leave the batch folder")
            if not re.fullmatch(r"[A-Za-z0-9._-]*", literal):
                raise self.fail(line, "filename", f"{quote(literal)} has characters not allowed in file names")
            if name is not None and name not in fields:
                raise self.fail(line, "filename", f"unknown field {{{name}}}{_hint(name, fields)}")
        if template.startswith("."):
            raise self.fail(line, "filename", "names must not start with '.'")


_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?")
MAX_WIDTH = 64  # the widest a format spec may pad a value in a file name


def _spec_problem(spec: str) -> str | None:
    """Why a `filename` format spec is refused: nested fields, or a width that would fill memory."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        return "is not a format spec for a number or text"
    for part in (match["width"], match["precision"]):
        if part and int(part[:6]) > MAX_WIDTH:
            return f"pads to more than {MAX_WIDTH} characters"
    return None


MAX_AUDIO_BYTES = 1024**3  # an input audio file larger than this is refused


def audio_digest(path: Path) -> str:
    """The sha256 of an input audio file, which must be a regular file holding audio.

    Raises OSError (missing, unreadable, a folder), or ValueError (not a regular file,
    too large, not audio). Read in chunks: a large file never sits in memory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError("is a folder, not an audio file" if stat.S_ISDIR(info.st_mode) else "is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > MAX_AUDIO_BYTES:
            raise ValueError(f"is larger than {MAX_AUDIO_BYTES // 1024**2} MB")
        head = fh.read(12)
        if not _is_audio(head):
            raise ValueError("is not an audio file (WAV, MP3, FLAC, OGG or M4A)")
        sha = hashlib.sha256(head)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _is_audio(head: bytes) -> bool:
    return (
        (head[:4] == b"RIFF" and head[8:12] == b"WAVE")
        or head[:3] == b"ID3"
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
        or head[:4] in (b"fLaC", b"OggS")
        or head[4:8] == b"ftyp"
    )


def _items(value: object, doc: LineDict, key: str, reader: _Reader) -> list[tuple[object, int | None]]:
    if value is None:
        return []
    if not isinstance(value, LineList):
        raise reader.fail(doc.lines.get(key), key, "must be a list of tracks")
    return list(zip(value, value.lines, strict=True))


def _as_loop(cell: str) -> object:
    """A CSV `loop` cell: `bpm/bars` or `bpm/bars/beats_per_bar`, e.g. `96/16`."""
    parts = cell.split("/")
    if len(parts) not in (2, 3):
        return cell  # the check names it
    values = [_as_float(p.strip()) for p in parts]
    return dict(zip(LOOP_KEYS, values, strict=False))


def _shape_value(name: str, value: object) -> tuple[object, str | None]:
    """`length` (seconds) or `loop` (bpm, bars, beats_per_bar), checked; (normalised value, problem)."""
    if name == "length":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return value, f"must be a number of seconds, not {quote(value)}"
        if not 1 <= value <= MAX_LENGTH:
            return value, f"must be between 1 and {MAX_LENGTH:g} seconds, not {quote(value)}"
        return float(value), None
    if not isinstance(value, dict):
        return value, f"must be a mapping like {{bpm: 96, bars: 16}}, not {quote(value)}"
    for key in value:
        if key not in LOOP_KEYS:
            return value, f"unknown key {quote(key)}{_hint(str(key), LOOP_KEYS)}; a loop takes bpm, bars, beats_per_bar"
    bpm, bars, beats = value.get("bpm"), value.get("bars"), value.get("beats_per_bar", 4)
    if isinstance(bpm, bool) or not isinstance(bpm, int | float) or not 20 <= bpm <= 400:
        return value, f"bpm must be a number from 20 to 400, not {quote(bpm)}"
    for label, count, top in (("bars", bars, 1000), ("beats_per_bar", beats, 32)):
        if (
            isinstance(count, bool)
            or not isinstance(count, int | float)
            or count != int(count)
            or not 1 <= count <= top
        ):
            return value, f"{label} must be a whole number from 1 to {top}, not {quote(count)}"
    made = Loop(float(bpm), int(bars), int(beats))  # type: ignore[arg-type]  # checked just above
    if made.seconds > MAX_LENGTH:
        return value, f"lasts more than {MAX_LENGTH:g} seconds"
    return {"bpm": made.bpm, "bars": made.bars, "beats_per_bar": made.beats_per_bar}, None


_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _as_bool(cell: str) -> object:
    return _BOOLS.get(cell.lower(), cell)


def _as_int(cell: str) -> object:
    try:
        return int(cell)
    except ValueError:
        return _as_float(cell)


def _as_float(cell: str) -> object:
    try:
        number = float(cell)
    except ValueError:
        return cell  # left as text: the parameter check then names the bad cell
    return int(number) if number.is_integer() and "." not in cell else number


def _coercer(key: str) -> Callable[[str], object]:
    """How to read a CSV column: by the type its parameter expects (text if unsure)."""
    if key in ("takes", "seed"):
        return _as_int
    if key == "length":
        return _as_float
    if key == "loop":
        return _as_loop
    param = PARAMS.get(key)
    kind = param.type if param else str
    if kind is bool:
        return _as_bool
    if kind in (int, float):
        return _as_int if kind is int else _as_float
    return str


def _hint(word: str, options: Sequence[str] | Mapping[str, object]) -> str:
    match = nearest(word, options)
    return f" (did you mean {quote(match)}?)" if match else ""


def _product_size(axes: Sequence[tuple[str, tuple[object, ...]]]) -> int:
    size = 1
    for _, values in axes:
        size *= len(values)
    return size


def _points(manifest: Manifest) -> list[dict[str, object]]:
    """Every sweep x zip point, in manifest order: sweep keys first, then zip keys."""
    keys = [k for k, _ in manifest.sweep]
    sweep = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in manifest.sweep))]
    if not manifest.zip:
        return sweep
    zkeys = [k for k, _ in manifest.zip]
    zipped = [dict(zip(zkeys, row, strict=True)) for row in zip(*(v for _, v in manifest.zip), strict=True)]
    return [{**s, **z} for s in sweep for z in zipped]


def expand(manifest: Manifest, base_seed: int | None = None) -> list[Task]:
    """Every task of the manifest, in order: track, then take, then sweep/zip point.

    `base_seed` is used when the manifest sets none (the runner draws one and keeps it
    in the journal); a manifest's own `seed` always wins.
    """
    with paused_gc():
        return _expand(manifest, base_seed)


def expand_as_recorded(manifest: Manifest, recorded_seed: int | None) -> list[Task]:
    """Expand with the base seed a run recorded in the journal, for plan, status and report.

    Before any run there is none: a provisional 0 stands in, so what they show is stable.
    """
    return expand(manifest, recorded_seed if recorded_seed is not None else 0)


def _expand(manifest: Manifest, base_seed: int | None) -> list[Task]:
    base = manifest.seed if manifest.seed is not None else base_seed
    points = _points(manifest)
    # Per-point text is shared by every track: compute it once, not once per task.
    point_texts = [canonical(p) if p else "" for p in points]
    suffixes = [point_suffix(p) for p in points]
    tasks: list[Task] = []
    owners: dict[str, Task] = {}
    jobs = text = 0
    for track in manifest.tracks:
        merged = {**manifest.defaults, **track.params}
        variants = []
        for point, point_text, suffix in zip(points, point_texts, suffixes, strict=True):
            params, audio, shape = _variant(manifest, track, merged, point)
            variants.append((point, point_text, suffix, params, audio, shape))
            text += track.takes * sum(len(v) for v in params.values() if isinstance(v, str))
        if text > MAX_EXPANDED_TEXT:
            message = f"expands to more than {MAX_EXPANDED_TEXT // 1024**2} MB of prompt text (track {track.name})"
            raise ManifestError(manifest.path, track.line, None, message)
        for take in range(1, track.takes + 1):
            for point, point_text, suffix, params, audio, shape in variants:
                seed = _seed_for(track, take, point, point_text, base)
                body = {**params, "seed": seed}
                if manifest.filename is None and track.takes == 1 and not point:
                    name = track.name  # the common case, without the template machinery
                else:
                    name = _output_name(manifest, track, take, point, body, suffix)
                shaping = _shaping(manifest, params, shape, seed) if shape else None
                task = Task(
                    name=name,
                    track=track.name,
                    take=take,
                    params=body,
                    digest=params_digest(
                        manifest.model, body, audio[1] if audio else None, shaping["digest"] if shaping else None
                    ),
                    model=manifest.model,
                    point=point,
                    input_audio=audio[0] if audio else None,
                    audio_sha256=audio[1] if audio else None,
                    hops=shaping["hops"] if shaping else (),
                    length=shaping["length"] if shaping else None,
                    loop=shaping["loop"] if shaping else None,
                    chain=manifest.chain if shaping else None,
                )
                _claim(manifest, track, owners, task)
                tasks.append(task)
                jobs += task.hop_count
                if jobs > MAX_TASKS:  # a chain's hops are jobs too: bound them all, not just tasks
                    message = f"expands to more than {MAX_TASKS:,} jobs (each hop of a chain is one)"
                    raise ManifestError(manifest.path, None, None, message)
    return tasks


def _claim(manifest: Manifest, track: Track, owners: dict[str, Task], task: Task) -> None:
    """Take `task`'s output name, or refuse it when another task has it (case-insensitively)."""
    key = task.name.lower()  # case-insensitive: macOS and Windows folders are
    if (other := owners.get(key)) is not None:
        templated = manifest.filename is not None
        raise ManifestError(
            manifest.path if templated else track.source,
            manifest.lines.get("filename") if templated else track.line,
            "filename" if templated else "name",
            f"output name {quote(task.name)} of track {quote(track.name)} take {task.take} is also the name of "
            f"track {quote(other.track)} take {other.take}; "
            "make names unique (e.g. add {take} to filename)",
        )
    owners[key] = task


def _variant(
    manifest: Manifest, track: Track, merged: dict[str, object], point: Mapping[str, object]
) -> tuple[dict[str, object], tuple[str, str] | None, dict[str, object]]:
    """A track at one sweep point: the body's parameters (checked together), its input audio, its shape."""
    params = {**merged, **point}
    shape = {key: params.pop(key) for key in SHAPES if key in params}
    length = shape.get("length")
    if isinstance(length, int | float) and "loop" not in shape and length <= _duration(params):
        params["duration"] = shape.pop("length")  # fits in one job: just ask for that long
    elif shape and "duration" not in params:
        params["duration"] = MAX_JOB  # a chain with no duration set: the longest jobs, the fewest seams
    for field_name, message in check_combination(params):
        if field_name in track.params or field_name not in merged:
            source, line = track.source, track.line_of(field_name)
        else:  # the offending value came from defaults
            source, line = manifest.path, manifest.lines.get("defaults")
        raise ManifestError(source, line, field_name, f"track {quote(track.name)}: {message}")
    audio = manifest.audio.get(params["inputAudio"]) if "inputAudio" in params else None  # type: ignore[call-overload]
    if shape:
        _check_chain(manifest, track, params, shape)
    return params, audio, shape


def _duration(params: Mapping[str, object]) -> float:
    value = params.get("duration", PARAMS["duration"].default)
    return float(value)  # type: ignore[arg-type]


def _target(shape: Mapping[str, Any], settings: ChainSettings) -> tuple[float, Loop | None]:
    """Seconds of audio a shaped task needs, and its loop."""
    loop = Loop(**shape["loop"]) if "loop" in shape else None
    return (loop.seconds + settings.crossfade if loop else float(shape["length"])), loop


def _check_chain(manifest: Manifest, track: Track, params: Mapping[str, object], shape: Mapping[str, Any]) -> None:
    """A chain needs at least a second of new audio per hop: context must be shorter than duration."""
    target, _ = _target(shape, manifest.chain)
    duration, where = _duration(params), "length" if "length" in shape else "loop"
    if target <= duration:
        return
    if duration - manifest.chain.context < 1:
        message = (
            f"track {quote(track.name)}: {target:g}s needs a chain of jobs, and each job's duration "
            f"({duration:g}s) must be at least a second longer than chain.context ({manifest.chain.context:g}s)"
        )
        raise ManifestError(track.source, track.line_of(where), where, message)
    hops = hop_count(duration, target, manifest.chain)
    if hops > MAX_HOPS:
        message = (
            f"track {quote(track.name)}: {target:g}s would take {hops:,} jobs of {duration:g}s, more than "
            f"{MAX_HOPS:,} in one chain; raise duration or lower chain.context"
        )
        raise ManifestError(track.source, track.line_of(where), where, message)


def _shaping(manifest: Manifest, params: Mapping[str, object], shape: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A long track's or a loop's hops, and what of it the digest covers (it is not in the body)."""
    target, loop = _target(shape, manifest.chain)
    hops = plan(_duration(params), target, manifest.chain, seed)
    settings = {"context": manifest.chain.context, "crossfade": manifest.chain.crossfade}
    digest = {**shape, "chain": settings}
    return {"hops": hops, "length": target if loop is None else loop.seconds, "loop": loop, "digest": digest}


def _seed_for(track: Track, take: int, point: Mapping[str, object], point_text: str, base: int | None) -> int:
    if "seed" in point and point["seed"] not in (None, -1):
        seed: int = int(point["seed"])  # type: ignore[call-overload]
        return seed
    if track.seed is not None:
        # Takes of a track with a fixed seed must still differ: seed, seed+1, ...
        return (track.seed + take - 1) % (2**32)
    if base is None:
        raise ValueError("expand() needs a base seed when the manifest has none")
    return derive_seed(base, track.name, take, point, point_text)


def _output_name(
    manifest: Manifest, track: Track, take: int, point: Mapping[str, object], body: Mapping[str, object], suffix: str
) -> str:
    if manifest.filename is None:
        name = default_name(track.name, take, track.takes, point, suffix)
    else:
        values: dict[str, object] = {k: p.default for k, p in PARAMS.items()}
        values.update(body)
        # Numbers stay numbers so format specs like {temperature:.1f} work; text is
        # made file-name safe so a prompt can never add a path separator.
        values = {
            k: v if isinstance(v, int | float) and not isinstance(v, bool) else format_value(v)
            for k, v in values.items()
        }
        values.update(track=track.name, take=take)
        try:
            name = manifest.filename.format(**values)
        except (ValueError, KeyError, IndexError) as err:
            raise ManifestError(
                manifest.path, manifest.lines.get("filename"), "filename", f"bad template: {err}"
            ) from None
    if not is_safe_name(name):
        raise ManifestError(
            track.source,
            track.line,
            "filename" if manifest.filename else "name",
            f"output name {quote(name)} would leave the batch folder or is not a valid file name",
        )
    return name

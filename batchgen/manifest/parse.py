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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core import modelrules
from ..core.chain import ChainSettings, Loop, hop_count, plan
from ..core.errors import ManifestError, UnsafeFileError, quote
from ..core.gcpause import paused_gc
from ..core.params import MODEL_ID, PARAMS, check_combination, check_value, nearest
from ..core.schema import ModelSchema, SchemaError
from ..core.task import (
    MAX_HOPS,
    HopPlan,
    LocalFile,
    Task,
    canonical,
    default_name,
    derive_seed,
    format_value,
    is_safe_id,
    is_safe_name,
    params_digest,
    point_suffix,
    text_band,
    with_files,
)
from ..core.text import loads as load_json
from ..store import files
from ..store import schemas as schema_store
from .models import Model, Resolve
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
TRACK_OWN = ("name", "takes", "seed", "model")  # a track's keys that are not inputs
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


class UnknownModel(ManifestError):
    """A model named in the manifest whose schema is not known here (not shipped, recorded or cached)."""

    def __init__(self, path: str, line: int | None, field: str | None, model: str) -> None:
        self.model = model
        message = (
            f"no schema is known for model {quote(model)} (not shipped, not recorded with the batch, "
            f"not cached): `batchgen models show {model} --live` fetches it, and `run` does"
        )
        super().__init__(path, line, field, message)


@dataclass(frozen=True, slots=True)
class _Key:
    """What the models a value may go to make of its key: who takes it, how to read and keep it."""

    takers: tuple[Model, ...]
    file: bool  # a file input: a local path is hashed and uploaded
    files: bool  # a file_array input
    whole: bool  # MusicGen keeps it as a whole number
    read: Callable[[str], object]  # a CSV cell's reading


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
    models: Mapping[str, Model] = field(default_factory=dict)  # every model the manifest names, by id
    sizes: Mapping[str, int] = field(default_factory=dict)  # bytes of each local file in `audio`

    def task_count(self) -> int:
        points = _product_size(self.sweep) * (len(self.zip[0][1]) if self.zip else 1)
        return sum(t.takes for t in self.tracks) * points


def known_schema(batch: str, model_id: str) -> ModelSchema | None:
    """The schema `validate` and `plan` use with no network: shipped, else cached live."""
    del batch  # the folder's recorded schemas are the caller's (`run` and the CLI know the folder)
    found = schema_store.shipped(model_id)
    if found is None and (cached := schema_store.cached(model_id)) is not None:
        found = cached[0]
    return found


def load(path: str | os.PathLike[str], resolve: Resolve = known_schema) -> Manifest:
    """Read and validate a manifest file and the files it names.

    `resolve` gives each model's schema; a model it does not know raises `UnknownModel`.
    """
    with paused_gc():
        return _Reader(Path(path), resolve).read()


class _Reader:
    """One manifest read: keeps the file name for every error it raises."""

    def __init__(self, path: Path, resolve: Resolve) -> None:
        self.path = path
        self.name = str(path)
        self.resolve = resolve
        self.batch = ""
        self.audio: dict[str, tuple[str, str]] = {}
        self.sizes: dict[str, int] = {}
        self.models: dict[str, Model] = {}
        self._keys: dict[tuple[str, int], _Key] = {}

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
        batch = self.batch = self._name(doc, "batch", required=True)
        model = self._model(doc.get("model", MODEL_ID), doc.lines.get("model"), "model", self.name).id
        takes = self._int(doc, "takes", 1, 1, MAX_TAKES)
        seed = self._seed(doc, "seed")
        rows = [(item, line, self.name, False) for item, line in _items(doc.get("tracks"), doc, "tracks", self)]
        if "tracks_file" in doc:
            rows.extend(self._tracks_file(doc))
        everywhere = self._scan_models(doc, rows)
        defaults = self._params(doc, "defaults", everywhere)
        sweep, zipped = self._sweep_and_zip(doc, everywhere)
        varied = any(key == "model" for key, _ in (*sweep, *zipped))
        usual = str(defaults.get("model", model))
        alone = {model_id: (found,) for model_id, found in self.models.items()}  # one scope object per model
        tracks = []
        for item, line, source, csv_row in rows:
            own = item.get("model") if isinstance(item, LineDict) else None
            scope = everywhere if varied else alone[own if isinstance(own, str) and own in alone else usual]
            tracks.append(self._track(item, line, takes, source, scope, csv_row=csv_row))
        if not tracks:
            raise self.fail(
                doc.lines.get("tracks", doc.line), "tracks", "at least one track is required (tracks or tracks_file)"
            )
        self._check_tracks(tracks, {key for key, _ in (*sweep, *zipped)})
        filename = doc.get("filename")
        if filename is not None:
            self._check_template(filename, doc.lines["filename"], everywhere)
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
            models=dict(self.models),
            sizes=self.sizes,
        )
        count = manifest.task_count()
        if count > MAX_TASKS:
            raise self.fail(doc.line, None, f"expands to {count:,} tasks, more than the limit of {MAX_TASKS:,}")
        return manifest

    def _model(self, value: object, line: int | None, where: str, source: str) -> Model:
        """The model named by `value`, its schema resolved once per manifest."""
        if not isinstance(value, str) or not is_safe_id(value):
            raise self.fail(line, where, f"{quote(value)} is not a Scenario model id", source=source)
        if (found := self.models.get(value)) is not None:
            return found
        try:
            schema = self.resolve(self.batch, value)
        except SchemaError as err:
            raise self.fail(line, where, str(err), source=source) from None
        if schema is None:
            raise UnknownModel(source, line, where, value)
        found = self.models[value] = Model.of(schema)
        return found

    def _scan_models(self, doc: LineDict, rows: Sequence[tuple[object, int | None, str, bool]]) -> tuple[Model, ...]:
        """Every model the manifest names (top, defaults, sweep, zip, tracks), each resolved."""
        named = [self.models[str(doc.get("model", MODEL_ID))]]
        defaults = doc.get("defaults")
        if isinstance(defaults, LineDict) and "model" in defaults:
            named.append(self._model(defaults["model"], defaults.lines["model"], "defaults.model", self.name))
        for key in ("sweep", "zip"):
            block = doc.get(key)
            if not isinstance(block, LineDict):
                continue
            values = block.get("model")
            if isinstance(values, list):
                at = block.lines["model"]
                named.extend(self._model(value, at, f"{key}.model", self.name) for value in values)
        for item, line, source, _ in rows:
            if isinstance(item, LineDict) and "model" in item:
                named.append(self._model(item["model"], item.lines.get("model", line), "model", source))
        return tuple({model.id: model for model in named}.values())

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

    def _sweep_and_zip(self, doc: LineDict, scope: tuple[Model, ...]) -> tuple[Axes, Axes]:
        sweep = self._axes(doc, "sweep", scope)
        zipped = self._axes(doc, "zip", scope)
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

    def _params(self, doc: LineDict, key: str, scope: tuple[Model, ...]) -> dict[str, object]:
        block = doc.get(key)
        if block is None:
            return {}
        if not isinstance(block, LineDict):
            raise self.fail(doc.lines[key], key, "must be a mapping of parameter: value")
        out: dict[str, object] = {}
        for name, value in block.items():
            line = block.lines[name]
            if name == "seed":
                raise self.fail(line, f"{key}.seed", "set the base seed with the top-level `seed:` instead")
            out[name] = self._value(name, value, line, f"{key}.{name}", self.name, scope)
        return out

    def _value(
        self, name: str, value: object, line: int | None, where: str, source: str, scope: tuple[Model, ...]
    ) -> object:
        """A parameter's value, checked by every model in `scope` that takes it (one must)."""
        if name == "model":
            return self._model(value, line, where, source).id
        if name in SHAPES:
            shaped, problem = _shape_value(name, value)
            if problem:
                raise self.fail(line, where, problem, source=source)
            return shaped
        key = self._key(name, scope)
        if not key.takers:
            raise self.fail(line, where, f"unknown parameter{_unknown(name, scope)}", source=source)
        for model in key.takers:
            if problem := model.check(name, value):
                about = "" if len(scope) == 1 or model.musicgen else f" ({model.id})"
                raise self.fail(line, where, problem + about, source=source)
        if key.file:
            assert isinstance(value, str)
            return self._audio(value, line, where, source)
        if key.files:
            assert isinstance(value, list)
            return [self._audio(str(item), line, where, source) for item in value]
        if key.whole:
            return int(value)  # type: ignore[call-overload]
        return value

    def _key(self, name: str, scope: tuple[Model, ...]) -> _Key:
        """What the models of `scope` make of a key, worked out once per key and scope."""
        cache = (name, id(scope))
        if (found := self._keys.get(cache)) is None:
            takers = tuple(m for m in scope if m.takes(name))
            found = self._keys[cache] = _Key(
                takers,
                file=any(m.native(name) in m.file_inputs for m in takers),
                files=any(m.native(name) in m.array_inputs for m in takers),
                whole=any(m.musicgen for m in takers) and PARAMS[name].type is int,
                read=_coercer(name, scope),
            )
        return found

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
        self.sizes[value] = local.stat().st_size
        return value

    def _axes(self, doc: LineDict, key: str, scope: tuple[Model, ...]) -> Axes:
        block = doc.get(key)
        if block is None:
            return ()
        if not isinstance(block, LineDict) or not block:
            raise self.fail(doc.lines[key], key, "must be a mapping of parameter: [values]")
        axes = []
        for name, values in block.items():
            line, where = block.lines[name], f"{key}.{name}"
            if not isinstance(values, list) or not values:
                raise self.fail(line, where, "must be a non-empty list of values")
            item_lines = getattr(values, "lines", [line] * len(values))
            checked = tuple(
                self._value(name, v, ln, where, self.name, scope) for v, ln in zip(values, item_lines, strict=True)
            )
            if len({format_value(v) for v in checked}) != len(checked):
                raise self.fail(line, where, "lists the same value twice")
            axes.append((name, checked))
        return tuple(axes)

    def _track(
        self, item: object, line: int | None, takes: int, source: str, scope: tuple[Model, ...], *, csv_row: bool
    ) -> Track:
        if not isinstance(item, LineDict):
            raise self.fail(line, "tracks", "each track must be a mapping with name and prompt", source=source)
        if csv_row:
            for key, cell in item.items():  # a CSV row's cells, read as the types their parameters expect
                if isinstance(cell, str):
                    item[key] = self._key(key, scope).read(cell)
        params: dict[str, object] = {}
        for key, value in item.items():
            key_line = item.lines.get(key, line)
            if key in ("name", "takes", "seed"):
                continue
            if key not in TRACK_OWN and key not in SHAPES and not self._key(key, scope).takers:
                raise self.fail(key_line, key, f"unknown key{_unknown(key, scope, TRACK_OWN)}", source=source)
            params[key] = self._value(key, value, key_line, key, source, scope)
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

    def _tracks_file(self, doc: LineDict) -> list[tuple[object, int | None, str, bool]]:
        """The rows of a tracks_file, read but not yet checked; CSV rows still hold text."""
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
        return [(item, row_line, source, suffix == ".csv") for item, row_line in rows]

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
            for key, cell in zip(header, cells, strict=True):
                cell = cell.strip()
                if cell:  # an empty cell leaves the parameter to the defaults
                    item[key] = cell  # read as its parameter's type once the row's model is known
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

    def _check_template(self, template: object, line: int, scope: tuple[Model, ...]) -> None:
        if not isinstance(template, str) or not template:
            raise self.fail(line, "filename", "must be a non-empty template string like '{track}-{take}'")
        fields = tuple(dict.fromkeys(("track", "take", "seed", "model", *(n for m in scope for n in m.names()))))
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
    """A CSV `loop` cell: `bpm/bars` or `bpm/bars/beats_per_bar`, e.g. `96/16`; or true/false."""
    if cell.lower() in _BOOLS:
        return _as_bool(cell)
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
    if isinstance(value, bool):
        return value, None  # the model's own seamless loop, for a model with a `loop` input
    if not isinstance(value, dict):
        return value, f"must be a mapping like {{bpm: 96, bars: 16}}, or true, not {quote(value)}"
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


def _coercer(key: str, scope: tuple[Model, ...]) -> Callable[[str], object]:
    """How to read a CSV column: by the type its parameter expects (text if unsure)."""
    if key in ("takes", "seed"):
        return _as_int
    if key == "length":
        return _as_float
    if key == "loop":
        return _as_loop
    taker = next((m for m in scope if m.takes(key)), None)
    kind = taker.kind(key) if taker is not None else str
    if kind is bool:
        return _as_bool
    if kind in (int, float):
        return _as_int if kind is int else _as_float
    return str


def _unknown(name: str, scope: tuple[Model, ...], extra: Sequence[str] = ()) -> str:
    """`unknown ...` + which model(s) it means and the nearest name any of them takes."""
    options = tuple(dict.fromkeys((*extra, *SHAPES, *(n for m in scope for n in m.names()))))
    models = " or ".join(m.id for m in scope[:3]) + (" or ..." if len(scope) > 3 else "")
    return f" for {models}{_hint(name, options)}"


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
            model, params, audio, shape = _variant(manifest, track, merged, point)
            variants.append((point, point_text, suffix, model, params, audio, shape))
            text += track.takes * sum(len(v) for v in params.values() if isinstance(v, str))
        if text > MAX_EXPANDED_TEXT:
            message = f"expands to more than {MAX_EXPANDED_TEXT // 1024**2} MB of prompt text (track {track.name})"
            raise ManifestError(manifest.path, track.line, None, message)
        drawn: list[set[int]] = [set() for _ in variants]  # each point's seeds so far, for narrow ranges
        for take in range(1, track.takes + 1):
            for (point, point_text, suffix, model, params, audio, shape), seeds in zip(variants, drawn, strict=True):
                seed = _distinct(model, _seed_for(track, take, point, point_text, base), seeds)
                body = {**params, "seed": seed} if model.seeds is not None or model.musicgen else params
                if manifest.filename is None and track.takes == 1 and not point:
                    name = track.name  # the common case, without the template machinery
                else:
                    name = _output_name(manifest, track, take, point, body, suffix, model)
                shaping = _shaping(manifest, model, params, shape, seed) if shape else None
                task = Task(
                    name=name,
                    track=track.name,
                    take=take,
                    params=body,
                    digest=_digest(model, body, audio, shaping["digest"] if shaping else None),
                    model=model.id,
                    point=point,
                    input_audio=audio[0].path if audio and audio[0].index is None else None,
                    audio_sha256=audio[0].sha256 if audio and audio[0].index is None else None,
                    hops=shaping["hops"] if shaping else (),
                    length=shaping["length"] if shaping else None,
                    loop=shaping["loop"] if shaping else None,
                    chain=manifest.chain if shaping else None,
                    file_input=audio[0].input if audio and audio[0].index is None else "inputAudio",
                    more_files=audio[1:] if audio and audio[0].index is None else audio,
                    duration_input=model.duration.name if model.duration is not None else "duration",
                    prompt_input=model.prompt or "prompt",
                    schema_digest=model.digest,
                    price_inputs=None if model.musicgen else modelrules.price_inputs(model.schema),
                    keeps_charge=model.schema.disable_refund,
                )
                _claim(manifest, track, owners, task)
                tasks.append(task)
                jobs += task.hop_count
                if jobs > MAX_TASKS:  # a chain's hops are jobs too: bound them all, not just tasks
                    message = f"expands to more than {MAX_TASKS:,} jobs (each hop of a chain is one)"
                    raise ManifestError(manifest.path, None, None, message)
    return _priced_by_band(tasks)


def _digest(model: Model, body: Mapping[str, object], files: Files, shape: Mapping[str, object] | None) -> str:
    """The task's digest: its body with each local file by content, so moving a file changes nothing."""
    if model.musicgen:  # as it always was: inputAudio's hash folded in by params_digest
        return params_digest(model.id, body, files[0].sha256 if files else None, shape)
    sent = with_files(body, files, lambda item: f"sha256:{item.sha256}")
    return params_digest(model.id, sent, None, shape)


def _priced_by_band(tasks: list[Task]) -> list[Task]:
    """Tasks whose price follows their text, each priced by the longest text of its length band.

    Texts are banded by length (powers of two); a dry run of a band's longest text is an
    upper bound for every task in it, so `--max-cost` stays a guarantee while 500 lines in
    one voice cost a handful of dry runs.
    """
    longest: dict[tuple[str, str, int], str] = {}
    keys: list[tuple[str, str, int] | None] = []
    for task in tasks:
        text = task.prompt
        if task.price_inputs is None or task.prompt_input not in task.price_inputs or not isinstance(text, str):
            keys.append(None)
            continue
        rest = {k: v for k, v in task.params.items() if k in task.price_inputs and k != task.prompt_input}
        key = (task.model, canonical(rest), text_band(len(text)))
        keys.append(key)
        if len(text) > len(longest.get(key, "")):
            longest[key] = text
    if not longest:
        return tasks
    return [t if k is None else replace(t, price_text=longest[k]) for t, k in zip(tasks, keys, strict=True)]


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


Files = tuple[LocalFile, ...]  # a task's local file inputs, each uploaded before its job


def _variant(
    manifest: Manifest, track: Track, merged: dict[str, object], point: Mapping[str, object]
) -> tuple[Model, dict[str, object], Files, dict[str, object]]:
    """A track at one sweep point: its model, the body (checked together), its input files, its shape."""
    params = {**merged, **point}
    model = manifest.models[str(params.pop("model", manifest.model))]
    if not model.musicgen:
        return _schema_variant(manifest, track, model, params, point)
    _own_keys(manifest, track, model, params, point)
    shape = {key: params.pop(key) for key in SHAPES if key in params}
    if isinstance(shape.get("loop"), bool):
        message = f"track {quote(track.name)}: {model.id} has no loop input; use loop: {{bpm, bars}} for a cut loop"
        raise ManifestError(track.source, track.line_of("loop"), "loop", message)
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
    local = manifest.audio.get(params["inputAudio"]) if "inputAudio" in params else None  # type: ignore[call-overload]
    if shape:
        _check_chain(manifest, track, params, shape)
    return model, params, (LocalFile("inputAudio", *local),) if local else (), shape


def _schema_variant(
    manifest: Manifest, track: Track, model: Model, params: dict[str, object], point: Mapping[str, object]
) -> tuple[Model, dict[str, object], Files, dict[str, object]]:
    """A track for a model described by its schema: keys mapped to its inputs, shapes to one job, checked."""
    _own_keys(manifest, track, model, params, point)
    _own_seed(manifest, track, model, point)
    if "prompt" in params and model.prompt not in (None, "prompt"):
        if model.prompt in params:
            message = f"track {quote(track.name)}: give prompt or {model.prompt}, not both ({model.id})"
            raise _at(manifest, track, point, "prompt", message)
        params[str(model.prompt)] = params.pop("prompt")
    shape = {key: params.pop(key) for key in SHAPES if key in params}
    _one_job(manifest, track, model, params, shape, point)
    problems = model.schema.check(params) + modelrules.check(model.id, params)
    for name, problem in problems:
        key = "prompt" if name == model.prompt and name not in {**track.params, **point} else name
        raise _at(manifest, track, point, key, f"track {quote(track.name)}: {problem} ({model.id})")
    return model, params, _local_files(manifest, track, model, params, point), shape


def _own_keys(
    manifest: Manifest, track: Track, model: Model, params: dict[str, object], point: Mapping[str, object]
) -> None:
    """Keep the keys `model` takes: a default meant for another model is left out, anything else refused."""
    for key in list(params):
        if key in SHAPES or model.takes(key):
            continue
        if key in track.params or key in point:
            message = f"track {quote(track.name)}: {model.id} has no input {quote(key)}{_hint(key, model.names())}"
            raise _at(manifest, track, point, key, message)
        del params[key]  # a default meant for the manifest's other models: this one does not take it


def _own_seed(manifest: Manifest, track: Track, model: Model, point: Mapping[str, object]) -> None:
    """A track's fixed seed must be one its model takes."""
    if track.seed is None:
        return
    if model.seeds is None:
        raise _at(manifest, track, point, "seed", f"track {quote(track.name)}: {model.id} takes no seed")
    low, high = model.seeds
    if not low <= track.seed <= high:
        message = f"track {quote(track.name)}: {model.id} takes seeds from {low} to {high}"
        raise _at(manifest, track, point, "seed", message)


def _one_job(
    manifest: Manifest,
    track: Track,
    model: Model,
    params: dict[str, object],
    shape: dict[str, object],
    point: Mapping[str, object],
) -> None:
    """`loop: true` to the model's own loop input; `length` and a cut loop to one job's duration."""
    if isinstance(shape.get("loop"), bool):
        if not model.native_loop:
            message = f"track {quote(track.name)}: {model.id} has no loop input, so loop: true cannot be asked of it"
            raise _at(manifest, track, point, "loop", message)
        params["loop"] = shape.pop("loop")
    if not shape:
        return
    key = "length" if "length" in shape else "loop"
    target, _ = _target(shape, manifest.chain)
    spec = model.duration
    if spec is None:
        raise _at(manifest, track, point, key, f"track {quote(track.name)}: {model.id} takes no duration")
    if (key == "length" and spec.max is not None and target > spec.max) or model.job_seconds(target) is None:
        most = f"{spec.max:g}" if spec.max is not None else "?"
        message = (
            f"track {quote(track.name)}: {model.id} makes at most {most}s in one job and cannot continue "
            f"a job, so {target:g}s is more than it can make"
        )
        raise _at(manifest, track, point, key, message)
    if key == "length":
        params[spec.name] = shape.pop("length")  # one job of exactly that length


def _local_files(
    manifest: Manifest, track: Track, model: Model, params: Mapping[str, object], point: Mapping[str, object]
) -> Files:
    """The task's local files (each uploaded before its job), checked against their input's limits."""
    found: list[LocalFile] = []
    for name in (*sorted(model.file_inputs), *sorted(model.array_inputs)):
        value = params.get(name)
        items = [(value, None)] if not isinstance(value, list) else [(v, i) for i, v in enumerate(value)]
        for item, index in items:
            if not isinstance(item, str) or item not in manifest.audio:
                continue  # an asset id: sent as it is
            _check_file(manifest, track, model, point, name, item)
            found.append(LocalFile(name, *manifest.audio[item], index=index))
    return tuple(found)


def _check_file(
    manifest: Manifest, track: Track, model: Model, point: Mapping[str, object], name: str, item: str
) -> None:
    """A local file against its input's maxSize, minDuration and maxDuration, before any upload."""
    spec = model.schema.input(name)
    if spec is None:
        return
    size = manifest.sizes.get(item, 0)
    if spec.max_size is not None and size > spec.max_size:
        message = f"{quote(item)} is {size:,} bytes, more than the {spec.max_size:,.0f} {model.id} takes"
        raise _at(manifest, track, point, name, message)
    if spec.min_duration is None and spec.max_duration is None:
        return
    seconds = audio_seconds(manifest.audio[item][0])
    if seconds is None:
        return  # a format only the API can measure: it says if it refuses it
    if spec.max_duration is not None and seconds > spec.max_duration:
        message = f"{quote(item)} lasts {seconds:.1f}s, more than the {spec.max_duration:g}s {model.id} takes"
        raise _at(manifest, track, point, name, message)
    if spec.min_duration is not None and seconds < spec.min_duration:
        message = f"{quote(item)} lasts {seconds:.1f}s, less than the {spec.min_duration:g}s {model.id} needs"
        raise _at(manifest, track, point, name, message)


def audio_seconds(path: str) -> float | None:
    """How long a local audio file lasts, through soundfile (the deliver extra); None when unknown.

    Without the extra, a file input's duration limits are left to the API, which says if
    it refuses the file.
    """
    try:
        import soundfile
    except ImportError:
        return None
    try:
        return float(soundfile.info(path).duration)
    except (RuntimeError, OSError, ValueError, TypeError):  # soundfile's LibsndfileError is a RuntimeError
        return None


def _at(manifest: Manifest, track: Track, point: Mapping[str, object], key: str, message: str) -> ManifestError:
    """An error about `key` of one task, placed where its value was written."""
    if key in point:
        where = next(k for k in ("sweep", "zip") if k in manifest.lines)
        return ManifestError(manifest.path, manifest.lines.get(where), key, message)
    if key in track.params or key not in manifest.defaults:
        return ManifestError(track.source, track.line_of(key), key, message)
    return ManifestError(manifest.path, manifest.lines.get("defaults"), key, message)


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


def _shaping(
    manifest: Manifest, model: Model, params: Mapping[str, object], shape: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    """A long track's or a loop's hops, and what of it the digest covers (it is not in the body)."""
    target, loop = _target(shape, manifest.chain)
    if model.musicgen:
        hops = plan(_duration(params), target, manifest.chain, seed)
    else:  # one job (checked by _schema_variant): a model without continuation cannot chain
        hops = (HopPlan(duration=model.job_seconds(target) or target, seed=seed),)
    settings = {"context": manifest.chain.context, "crossfade": manifest.chain.crossfade}
    digest = {**shape, "chain": settings}
    return {"hops": hops, "length": target if loop is None else loop.seconds, "loop": loop, "digest": digest}


def _distinct(model: Model, seed: int, drawn: set[int]) -> int:
    """`seed` in the model's range, moved on past seeds this track's earlier takes drew there.

    In a range as narrow as MM Audio's (0..65535) 40 takes would share a seed one time in
    eighty; MusicGen's seeds are never moved, so its batches keep theirs.
    """
    seed = model.fit_seed(seed)
    if model.musicgen or model.seeds is None:
        return seed
    low, high = model.seeds
    while seed in drawn and len(drawn) <= high - low:
        seed = model.fit_seed(seed + 1)
    drawn.add(seed)
    return seed


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
    manifest: Manifest,
    track: Track,
    take: int,
    point: Mapping[str, object],
    body: Mapping[str, object],
    suffix: str,
    model: Model,
) -> str:
    if manifest.filename is None:
        name = default_name(track.name, take, track.takes, point, suffix)
    else:
        values: dict[str, object] = {n: None for m in manifest.models.values() for n in m.names()}
        values.update({k: p.default for k, p in PARAMS.items()} if model.musicgen else {})
        values.update({i.name: i.default for i in model.schema.inputs} if not model.musicgen else {})
        values.update(body, model=model.id, prompt=body.get(model.prompt or "prompt"))
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

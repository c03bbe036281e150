"""Model schemas kept on this machine: the ones that ship, and live ones cached per user.

Shipped: one JSON file per model in the package's `schemas/` folder, in the SDK's
`ModelInput` shape, holding only what Scenario's own pages document (see
`schemas/README.md`): no guessed steps, no guessed price flags; `validate` and `plan`
know them with no network. Cached: a live `GET /models/{id}` answer, kept for a day in
the platform's cache folder (`$XDG_CACHE_HOME/batchgen/models`, else
`~/.cache/batchgen/models`), written atomically and never through a symlink; a damaged
or stale cache file is simply not used.
"""

from __future__ import annotations

import functools
import json
import os
import time
from importlib import resources
from pathlib import Path

from ..core import text
from ..core.errors import BatchgenError
from ..core.schema import ModelSchema, SchemaError, parse, to_json
from ..core.task import is_safe_id
from . import files
from .layout import Layout

CACHE_SECONDS = 24 * 3600  # a live schema is asked again after a day
MAX_SCHEMA_BYTES = 4 * 1024 * 1024

_FOLDER = "schemas"

# What each shipped model makes: a schema has no such field, so it is kept here.
MAKES = {
    "model_meta-musicgen": "music",
    "model_beatoven-music-generation": "music",
    "model_lyria-2": "music",
    "model_elevenlabs-music-v2": "music",
    "model_minimax-music-2-6": "music",
    "model_ace-step-1-5-turbo-text-to-music": "music",
    "model_elevenlabs-sound-effects-v2": "effects",
    "model_beatoven-sound-effect": "effects",
    "model_mm-audio-2-t2a": "effects",
    "model_elevenlabs-tts-v3": "speech",
}


@functools.cache
def shipped_ids() -> tuple[str, ...]:
    """The ids of the models whose schemas ship with batchgen, sorted."""
    folder = resources.files("batchgen").joinpath(_FOLDER)
    return tuple(sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")))


@functools.cache
def shipped(model_id: str) -> ModelSchema | None:
    """The shipped schema of `model_id`, or None when none ships."""
    if not is_safe_id(model_id) or model_id not in shipped_ids():
        return None
    path = resources.files("batchgen").joinpath(_FOLDER, f"{model_id}.json")
    return parse(json.loads(path.read_text(encoding="utf-8")), f"batchgen's shipped schema {model_id}")


def recorded(folder: Path, model_id: str) -> tuple[ModelSchema, str | None] | None:
    """The schema the batch in `folder` recorded for `model_id`, and the digest of a newer live
    one already reported (so it is reported once); None when none is recorded.

    A recorded schema that cannot be read is an error naming its file: it is what the
    batch's tasks were checked against, and silently using another would change them.
    """
    if not is_safe_id(model_id):
        return None
    path = Layout(folder).model(model_id)
    try:
        data = files.read_regular(path, MAX_SCHEMA_BYTES)
    except OSError as err:
        raise SchemaError(f"{path}: cannot read the recorded schema: {err.strerror or err}") from None
    if data is None:
        return None
    try:
        doc = text.loads(data)
    except (ValueError, RecursionError):
        raise SchemaError(f"{path}: the recorded schema is not JSON; delete it to record the live one again") from None
    schema = parse(doc.get("model") if isinstance(doc, dict) else None, str(path))
    if schema.id != model_id:
        raise SchemaError(f"{path}: records model {schema.id}, not {model_id}")
    noticed = doc.get("noticed")
    return schema, noticed if isinstance(noticed, str) else None


def record(folder: Path, schema: ModelSchema, *, source: str, noticed: str | None = None) -> None:
    """Record `schema` with the batch in `folder` (`source`: live or shipped)."""
    path = Layout(folder).model(schema.id)
    files.ensure_dir(path.parent)
    doc: dict[str, object] = {"model": to_json(schema), "source": source, "recorded": time.time()}
    if noticed is not None:
        doc["noticed"] = noticed
    files.write_json_atomic(path, doc)


def differences(old: ModelSchema, new: ModelSchema) -> list[str]:
    """What differs between two schemas of one model, input by input, in words."""
    before, after = {i.name: i for i in old.inputs}, {i.name: i for i in new.inputs}
    out = [f"+{name}" for name in after if name not in before]
    out += [f"-{name}" for name in before if name not in after]
    out += [f"~{name}" for name in after if name in before and after[name] != before[name]]
    if old.disable_refund != new.disable_refund:
        out.append("~disableRefund")
    return out


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "batchgen" / "models"


def cached(model_id: str, max_age: float = CACHE_SECONDS) -> tuple[ModelSchema, float] | None:
    """A live schema fetched less than `max_age` seconds ago, and when; None if there is none usable."""
    if not is_safe_id(model_id):
        return None
    path = cache_dir() / f"{model_id}.json"
    try:
        data = files.read_regular(path, MAX_SCHEMA_BYTES)
        if data is None:
            return None
        doc = text.loads(data)
        fetched = doc.get("fetched") if isinstance(doc, dict) else None
        if not isinstance(fetched, int | float) or not 0 <= time.time() - fetched <= max_age:
            return None
        schema = parse(doc.get("model"), str(path))
    except (OSError, ValueError, RecursionError, BatchgenError):
        return None
    return (schema, float(fetched)) if schema.id == model_id else None


def remember(schema: ModelSchema) -> None:
    """Keep a live schema in the user's cache for a day (a cache that cannot be written is skipped)."""
    folder = cache_dir()
    try:
        files.ensure_dir(folder)
        files.write_json_atomic(folder / f"{schema.id}.json", {"fetched": time.time(), "model": to_json(schema)})
    except (OSError, BatchgenError):
        pass  # a read-only home still shows the live schema; it is asked again next time


def cached_ids() -> tuple[str, ...]:
    try:
        names = os.listdir(cache_dir())
    except OSError:
        return ()
    return tuple(sorted(n.removesuffix(".json") for n in names if n.endswith(".json") and is_safe_id(n[:-5])))


__all__ = [
    "MAKES",
    "SchemaError",
    "cache_dir",
    "cached",
    "cached_ids",
    "differences",
    "record",
    "recorded",
    "remember",
    "shipped",
    "shipped_ids",
]

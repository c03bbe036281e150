"""The model schemas that ship with batchgen: what `validate` and `plan` know with no network.

One JSON file per model in the package's `schemas/` folder, in the SDK's `ModelInput`
shape, holding only what Scenario's own pages document (see `schemas/README.md`): no
guessed steps, no guessed price flags.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from ..core.schema import ModelSchema, parse
from ..core.task import is_safe_id

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


__all__ = ["MAKES", "shipped", "shipped_ids"]

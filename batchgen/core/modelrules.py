"""What no schema can say: a small table of rules for particular models, checked on top of theirs.

Each rule is documented by Scenario's own page for the model; MusicGen's (multi-band
diffusion only on the mono versions, input audio only on the melody versions, a positive
temperature) live in `params` with the rest of its parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .schema import Input, ModelSchema, given
from .task import SEED_MAX

Problems = list[tuple[str, str]]


def _prompt_or_lyrics(body: Mapping[str, object]) -> Problems:
    """ACE-Step 1.5: "Either `prompt` or `lyrics` is required" (its model page, 2026-07-29)."""
    if given(body, "prompt") or given(body, "lyrics"):
        return []
    return [("prompt", "a prompt or lyrics is required")]


RULES: dict[str, Callable[[Mapping[str, object]], Problems]] = {
    "model_ace-step-1-5-turbo-text-to-music": _prompt_or_lyrics,
    "model_ace-step-1-5-quality-text-to-music": _prompt_or_lyrics,
}


# The prompt input of models whose schema marks none (their pages name it).
PROMPT_INPUTS = {
    "model_elevenlabs-sound-effects-v2": "text",
    "model_elevenlabs-tts-v3": "text",
}
DURATION_NAMES = ("duration", "durationSeconds")  # the input that says how long a job is
_NEVER_PRICED = ("seed",)  # a random seed never moves a price


def prompt_input(schema: ModelSchema) -> str | None:
    """The input `prompt:` maps to: the schema's mark, the table, else `prompt` or `text`."""
    named = schema.prompt_input or PROMPT_INPUTS.get(schema.id)
    if named is not None and schema.input(named) is not None:
        return named
    return next((n for n in ("prompt", "text") if schema.input(n) is not None and _is_text(schema, n)), None)


def duration_input(schema: ModelSchema) -> Input | None:
    """The number input that says how long one job is, if the model has one."""
    return next((i for name in DURATION_NAMES if (i := schema.input(name)) is not None and i.type == "number"), None)


def seed_range(schema: ModelSchema) -> tuple[int, int] | None:
    """The seeds the model takes (its own range, within 0..2^31-1), or None: it takes none."""
    seed = schema.input("seed")
    if seed is None or seed.type != "number":
        return None
    low = max(0, int(seed.min or 0))
    high = SEED_MAX if seed.max is None else min(SEED_MAX, int(seed.max))
    return (low, high) if low <= high else None


def native_loop(schema: ModelSchema) -> bool:
    """Whether the model makes seamless loops itself (a boolean `loop` input)."""
    found = schema.input("loop")
    return found is not None and found.type == "boolean"


def price_inputs(schema: ModelSchema) -> tuple[str, ...]:
    """The inputs that move the price: those marked `costImpact`, or every input when none is."""
    marked = tuple(i.name for i in schema.inputs if i.cost_impact)
    chosen = marked or tuple(i.name for i in schema.inputs)
    return tuple(n for n in chosen if n not in _NEVER_PRICED)


def _is_text(schema: ModelSchema, name: str) -> bool:
    found = schema.input(name)
    return found is not None and found.type == "string"


def check(model: str, body: Mapping[str, object]) -> Problems:
    """The model's own rules that its schema cannot express; [] when it has none."""
    rule = RULES.get(model)
    return rule(body) if rule is not None else []


__all__ = [
    "PROMPT_INPUTS",
    "RULES",
    "check",
    "duration_input",
    "native_loop",
    "price_inputs",
    "prompt_input",
    "seed_range",
]

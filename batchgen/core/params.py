"""The MusicGen parameter table and its cross-field rules, as data plus pure checks.

Shared by the manifest (to reject bad input before money is spent) and the simulator
(to answer 400 the way the API does), so both always agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import quote

MODEL_ID = "model_meta-musicgen"
STEREO_MODELS = frozenset({"stereo-melody-large", "stereo-large"})
MELODY_MODELS = frozenset({"stereo-melody-large", "melody-large"})


MAX_TEXT = 64 * 1024  # characters in any one text value: generous (speech models take long texts), bounded


@dataclass(frozen=True, slots=True)
class Param:
    """One API parameter: its JSON type, default and allowed values."""

    name: str
    type: type  # str, float (any number), int or bool
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value: object) -> str | None:
        """Return why `value` is not allowed, or None when it is."""
        # bool is an int subclass in Python; YAML `true` must not pass as a number.
        if self.type is bool:
            return None if isinstance(value, bool) else f"must be true or false, not {_show(value)}"
        if self.type is str:
            if not isinstance(value, str):
                return f"must be a string, not {_show(value)}"
            if len(value) > MAX_TEXT:
                return f"is {len(value):,} characters long; at most {MAX_TEXT:,} (64 KB) in one value"
            if self.choices and value not in self.choices:
                hint = _nearest(value, self.choices)
                return f"unknown value {quote(value)}; allowed: {', '.join(self.choices)}{hint}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, not {_show(value)}"
        if self.type is int and not (isinstance(value, int) or float(value).is_integer()):
            return f"must be a whole number, not {quote(value)}"
        if not math.isfinite(value):
            return f"must be a finite number, not {quote(value)}"
        if self.minimum is not None:
            if self.exclusive_minimum and value <= self.minimum:
                return f"must be greater than {_num(self.minimum)}, not {quote(value)}"
            if value < self.minimum:
                return f"must be at least {_num(self.minimum)}, not {quote(value)}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {_num(self.maximum)}, not {quote(value)}"
        return None


PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param(
            "modelVersion",
            str,
            "stereo-melody-large",
            choices=("stereo-melody-large", "stereo-large", "melody-large", "large"),
        ),
        Param("prompt", str, ""),
        Param("inputAudio", str),
        Param("duration", float, 8, minimum=1, maximum=30),
        Param("continuation", bool, False),
        Param("continuationStart", float, 0, minimum=0),
        Param("continuationEnd", float, minimum=0),
        Param("multiBandDiffusion", bool, False),
        Param("normalizationStrategy", str, "loudness", choices=("loudness", "clip", "peak", "rms")),
        Param("temperature", float, 1, minimum=0, exclusive_minimum=True),
        Param("classifierFreeGuidance", float, 3, minimum=0, maximum=10),
        Param("seed", int, None, minimum=-1, maximum=2**32 - 1),
    )
}


def check_value(name: str, value: object) -> str | None:
    """Why `value` is not valid for parameter `name` (None when it is)."""
    param = PARAMS.get(name)
    if param is None:
        return f"unknown parameter{_nearest(name, PARAMS)}"
    return param.check(value)


def check_combination(params: Mapping[str, object]) -> list[tuple[str, str]]:
    """Cross-field rules of SPEC section 4, as (field, message) pairs; empty when valid."""
    problems: list[tuple[str, str]] = []
    model = params.get("modelVersion", PARAMS["modelVersion"].default)
    has_audio = bool(params.get("inputAudio"))
    prompt = params.get("prompt")
    if not has_audio and not (isinstance(prompt, str) and prompt.strip()):
        problems.append(("prompt", "a non-empty prompt is required unless inputAudio is given"))
    if params.get("continuation") and not has_audio:
        problems.append(("continuation", "continuation: true needs inputAudio"))
    if has_audio and model not in MELODY_MODELS and not params.get("continuation"):
        problems.append(("inputAudio", f"{model} takes input audio only with continuation: true"))
    if params.get("multiBandDiffusion") and model in STEREO_MODELS:
        problems.append(("multiBandDiffusion", f"not available for the stereo model {model}"))
    start, end = params.get("continuationStart"), params.get("continuationEnd")
    if isinstance(start, int | float) and isinstance(end, int | float) and start > end:
        problems.append(("continuationStart", f"continuationStart ({start}) is after continuationEnd ({end})"))
    return problems


def check_params(params: Mapping[str, object]) -> list[tuple[str, str]]:
    """Every problem with a complete parameter set: per-field first, then cross-field."""
    problems = [(name, msg) for name, value in params.items() if (msg := check_value(name, value))]
    return problems or check_combination(params)


def channels(params: Mapping[str, object]) -> int:
    """Audio channels the model produces: stereo models give two."""
    model = params.get("modelVersion", PARAMS["modelVersion"].default)
    return 2 if model in STEREO_MODELS else 1


def nearest(word: str, options: object) -> str | None:
    """The closest known word to a misspelt one, for 'did you mean' hints."""
    import difflib  # only for error messages

    matches = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)  # type: ignore[call-overload]
    return matches[0] if matches else None


def _nearest(word: str, options: object) -> str:
    match = nearest(word, options)
    return f" (did you mean {quote(match)}?)" if match else ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: object) -> str:
    if isinstance(value, str):
        return f"the string {quote(value)}"
    if value is None:
        return "an empty value"
    return f"{type(value).__name__} {quote(value)}"

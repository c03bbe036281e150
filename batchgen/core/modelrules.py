"""What no schema can say: a small table of rules for particular models, checked on top of theirs.

Each rule is documented by Scenario's own page for the model; MusicGen's (multi-band
diffusion only on the mono versions, input audio only on the melody versions, a positive
temperature) live in `params` with the rest of its parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .schema import given

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


def check(model: str, body: Mapping[str, object]) -> Problems:
    """The model's own rules that its schema cannot express; [] when it has none."""
    rule = RULES.get(model)
    return rule(body) if rule is not None else []


__all__ = ["RULES", "check"]

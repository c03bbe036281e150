"""What a manifest may ask of one model: its inputs by name, their values, its capabilities.

A `Model` is the manifest's view of a schema (`core.schema`) with the rules no schema
states (`core.modelrules`): which input `prompt:` means, which input sets a job's length,
the seeds it takes, whether it loops natively. MusicGen keeps
its own parameter table (`core.params`), which says exactly what its schema does and
more (its cross-field rules), so its batches validate and hash as they always have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..core import modelrules
from ..core.params import MODEL_ID, PARAMS, check_value
from ..core.schema import Input, ModelSchema

# Where a manifest's models come from: (batch name, model id) -> its schema, or None.
Resolve = Callable[[str, str], ModelSchema | None]


@dataclass(frozen=True, slots=True)
class Model:
    """One model as a manifest uses it; what its schema implies is worked out once, when it is made
    (a 100,000-row manifest asks these for every cell)."""

    schema: ModelSchema
    digest: str  # of the schema: recorded beside each task, never hashed into it
    musicgen: bool
    prompt: str | None  # the input `prompt:` means
    duration: Input | None  # the input that says how long a job is
    seeds: tuple[int, int] | None  # the seeds it takes; None: it takes none
    native_loop: bool  # it loops by itself (a boolean `loop` input)
    file_inputs: frozenset[str]  # inputs that take one file: a local path (uploaded first) or an asset id
    array_inputs: frozenset[str]  # inputs that take a list of files
    _names: tuple[str, ...]
    _taken: frozenset[str]  # every key a manifest may give it

    @classmethod
    def of(cls, schema: ModelSchema) -> Model:
        musicgen = schema.id == MODEL_ID
        prompt = "prompt" if musicgen else modelrules.prompt_input(schema)
        own = tuple(PARAMS) if musicgen else tuple(i.name for i in schema.inputs)
        names = own if prompt is None or "prompt" in own else ("prompt", *own)
        return cls(
            schema,
            schema.digest(),
            musicgen,
            prompt,
            modelrules.duration_input(schema),
            modelrules.seed_range(schema),
            modelrules.native_loop(schema),
            frozenset(i.name for i in schema.inputs if i.type == "file"),
            frozenset(i.name for i in schema.inputs if i.type == "file_array"),
            names,
            frozenset(names),
        )

    @property
    def id(self) -> str:
        return self.schema.id

    def names(self) -> tuple[str, ...]:
        """Every key a manifest may give this model (`prompt` included where it maps)."""
        return self._names

    def native(self, name: str) -> str:
        """The input a manifest key sends: `prompt` becomes the model's prompt input."""
        return self.prompt if name == "prompt" and self.prompt is not None else name

    def takes(self, name: str) -> bool:
        return name in self._taken

    def check(self, name: str, value: object) -> str | None:
        """Why this model refuses `value` for `name`, or None (`takes(name)` must hold)."""
        if self.musicgen:
            return check_value(name, value)
        spec = self.schema.input(self.native(name))
        assert spec is not None
        return spec.check(value)

    def kind(self, name: str) -> type:
        """What a CSV cell for `name` should be read as: bool, int, float or str."""
        if self.musicgen:
            return PARAMS[name].type if name in PARAMS else str
        spec = self.schema.input(self.native(name))
        if spec is None:
            return str
        return {"boolean": bool, "number": float}.get(spec.type, str)

    def fit_seed(self, seed: int) -> int:
        """A derived seed moved into the model's own seed range (MusicGen's range is every seed)."""
        if self.musicgen or self.seeds is None:
            return seed
        low, high = self.seeds
        return low + (seed - low) % (high - low + 1)

    def job_seconds(self, seconds: float) -> float | None:
        """What to ask of the duration input for `seconds` of audio in one job, or None if it cannot."""
        spec = self.duration
        if spec is None:
            return None
        asked = math.ceil(seconds - 1e-9) if spec.step is None else math.ceil(seconds / spec.step - 1e-9) * spec.step
        asked = max(float(asked), spec.min or 0.0)
        return asked if spec.max is None or asked <= spec.max else None


__all__ = ["Model", "Resolve"]

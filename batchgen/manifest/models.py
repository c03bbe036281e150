"""What a manifest may ask of one model: its inputs by name, their values, its capabilities.

A `Model` is the manifest's view of a schema (`core.schema`) with the rules no schema
states (`core.modelrules`): which input `prompt:` means, which input sets a job's length,
the seeds it takes, whether it loops natively or continues earlier audio. MusicGen keeps
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
    """One model as a manifest uses it."""

    schema: ModelSchema
    digest: str  # of the schema: recorded beside each task, never hashed into it

    @classmethod
    def of(cls, schema: ModelSchema) -> Model:
        return cls(schema, schema.digest())

    @property
    def id(self) -> str:
        return self.schema.id

    @property
    def musicgen(self) -> bool:
        return self.schema.id == MODEL_ID

    @property
    def prompt(self) -> str | None:
        return "prompt" if self.musicgen else modelrules.prompt_input(self.schema)

    @property
    def duration(self) -> Input | None:
        return modelrules.duration_input(self.schema)

    @property
    def seeds(self) -> tuple[int, int] | None:
        return modelrules.seed_range(self.schema)

    @property
    def native_loop(self) -> bool:
        return modelrules.native_loop(self.schema)

    @property
    def continues(self) -> bool:
        return self.musicgen or modelrules.continues(self.schema)

    @property
    def file_inputs(self) -> tuple[str, ...]:
        """Inputs that take one file: a local path (uploaded first) or an asset id."""
        return tuple(i.name for i in self.schema.inputs if i.type == "file")

    @property
    def array_inputs(self) -> tuple[str, ...]:
        """Inputs that take a list of files, each a local path or an asset id."""
        return tuple(i.name for i in self.schema.inputs if i.type == "file_array")

    def names(self) -> tuple[str, ...]:
        """Every key a manifest may give this model (`prompt` included where it maps)."""
        own = tuple(PARAMS) if self.musicgen else tuple(i.name for i in self.schema.inputs)
        return own if self.prompt is None or "prompt" in own else ("prompt", *own)

    def native(self, name: str) -> str:
        """The input a manifest key sends: `prompt` becomes the model's prompt input."""
        return self.prompt if name == "prompt" and self.prompt is not None else name

    def takes(self, name: str) -> bool:
        if self.musicgen:
            return name in PARAMS
        return self.schema.input(self.native(name)) is not None

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

"""A model's inputs as the API describes them (`GET /models/{id}`), and the values they accept.

Pure: a schema is read from the answer's `model` object (the official SDK's
`ModelInput` fields: `name`, `type`, `allowedValues`, `default`, `min`, `max`, `step`,
`minLength`, `maxLength`, `minDuration`, `maxDuration`, `maxSize`, `required`
{`always`, `ifDefined`, `ifNotDefined`, `conditional`}, `kind`, `prompt`, `costImpact`,
nested `inputs` for `inputs_array`; on the model, `disableRefund`), and `check` says
what in a request body it would refuse, each problem naming its field. What a file
input holds (a local file's size and duration) is checked where the file is read.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BatchgenError

INPUT_TYPES = frozenset(
    {
        "boolean",
        "file",
        "file_array",
        "inputs_array",
        "model",
        "model_array",
        "number",
        "number_array",
        "string",
        "string_array",
    }
)
MAX_INPUTS = 200  # inputs one model (or one row of an inputs_array) may declare
_STEP_SLACK = 1e-9


class SchemaError(BatchgenError):
    """A model description batchgen cannot use; says where it came from and what is wrong."""


@dataclass(frozen=True, slots=True)
class Required:
    """When an input must be given: always, when another is given (or not), or on others' values."""

    always: bool = False
    if_defined: tuple[str, ...] = ()  # required when any of these inputs is given
    if_not_defined: tuple[str, ...] = ()  # required when any of these inputs is not given
    when: Mapping[str, tuple[object, ...]] = field(default_factory=dict)  # required when inputs hold these values
    every: bool = False  # `when` needs all its conditions (and), not any one (or)

    def applies(self, body: Mapping[str, object]) -> bool:
        if self.always:
            return True
        if any(given(body, name) for name in self.if_defined):
            return True
        if any(not given(body, name) for name in self.if_not_defined):
            return True
        if self.when:
            hits = (body.get(name) in values for name, values in self.when.items())
            return all(hits) if self.every else any(hits)
        return False


@dataclass(frozen=True, slots=True)
class Input:
    """One input of a model."""

    name: str
    type: str
    default: object = None
    allowed: tuple[object, ...] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_duration: float | None = None  # seconds, for a file input's audio
    max_duration: float | None = None
    max_size: float | None = None  # bytes, for a file input
    required: Required = Required()
    prompt: bool = False  # the schema marks it as the model's prompt
    cost_impact: bool | None = None  # moves the price (None: the schema does not say)
    kind: str | None = None
    rows: tuple[Input, ...] = ()  # an inputs_array's row inputs

    def check(self, value: object) -> str | None:
        """Why `value` is refused for this input, or None when it is accepted."""
        kind = self.type
        if kind in ("string", "model", "file"):
            return _text(value, self)
        if kind == "number":
            return _number(value, self)
        if kind == "boolean":
            return None if type(value) is bool else "must be true or false"
        if not isinstance(value, list):
            return "must be a list"
        if (problem := _count(value, self)) is not None:
            return problem
        if kind == "inputs_array":
            for index, row in enumerate(value):
                if not isinstance(row, Mapping):
                    return f"item {index + 1} must be a mapping"
                for name, problem in check_inputs(self.rows, row):
                    return f"item {index + 1}: {name}: {problem}"
            return None
        item = {"file_array": "file", "model_array": "model", "string_array": "string"}.get(kind, "number")
        single = Input(self.name, item, allowed=self.allowed, min=self.min, max=self.max, step=self.step)
        for index, each in enumerate(value):
            if (problem := single.check(each)) is not None:
                return f"item {index + 1} {problem}"
        return None


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """A model's id and inputs, and whether its failed jobs keep their charge."""

    id: str
    inputs: tuple[Input, ...]
    name: str | None = None
    disable_refund: bool = False

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    @property
    def prompt_input(self) -> str | None:
        """The input the schema marks as the prompt, if it marks one."""
        return next((i.name for i in self.inputs if i.prompt), None)

    def check(self, params: Mapping[str, object]) -> list[tuple[str, str]]:
        """(field, problem) for everything in `params` this model would refuse."""
        return check_inputs(self.inputs, params)

    def digest(self) -> str:
        """What this schema is, as a short hash: recorded beside a task, never part of its identity."""
        data = json.dumps(to_json(self), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(data).hexdigest()[:16]


def check_inputs(inputs: Iterable[Input], params: Mapping[str, object]) -> list[tuple[str, str]]:
    known = {i.name: i for i in inputs}
    problems: list[tuple[str, str]] = []
    for name, value in params.items():
        spec = known.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(known), n=1)
            problems.append((name, f"unknown input{f'; did you mean {close[0]!r}?' if close else ''}"))
        elif value is not None and (problem := spec.check(value)) is not None:
            problems.append((name, problem))
    for spec in known.values():
        if not given(params, spec.name) and spec.required.applies(params):
            problems.append((spec.name, "is required"))
    return problems


def parse(doc: object, source: str) -> ModelSchema:
    """A schema from a `GET /models/{id}` answer (or its `model` object, or a shipped file).

    Raises `SchemaError` naming `source` and the input at fault; fields batchgen does not
    use are ignored.
    """
    model = doc.get("model", doc) if isinstance(doc, Mapping) else None
    if not isinstance(model, Mapping) or not isinstance(model.get("id"), str):
        raise SchemaError(f"{source}: not a model description (no model id)")
    raw = model.get("inputs")
    if not isinstance(raw, list) or not raw:
        raise SchemaError(f"{source}: model {model['id']} describes no inputs")
    inputs = _inputs(raw, source)
    name = model.get("name")
    return ModelSchema(model["id"], inputs, name if isinstance(name, str) else None, model.get("disableRefund") is True)


def to_json(schema: ModelSchema) -> dict[str, Any]:
    """The schema in the SDK's shape, as it is recorded with a batch (`parse` reads it back)."""
    out: dict[str, Any] = {"id": schema.id, "inputs": [_input_json(i) for i in schema.inputs]}
    if schema.name is not None:
        out["name"] = schema.name
    if schema.disable_refund:
        out["disableRefund"] = True
    return out


def given(params: Mapping[str, object], name: str) -> bool:
    """Whether a body gives `name` a value (absent, null, "" and [] give none)."""
    value = params.get(name)
    return value is not None and value != "" and value != []


def _text(value: object, spec: Input) -> str | None:
    if type(value) is not str:
        return "must be text"
    if spec.allowed is not None and value not in spec.allowed:
        return _one_of(spec.allowed)
    if spec.min_length is not None and len(value) < spec.min_length:
        return f"must be at least {spec.min_length} characters"
    if spec.max_length is not None and len(value) > spec.max_length:
        return f"must be at most {spec.max_length:,} characters ({len(value):,} given)"
    return None


def _number(value: object, spec: Input) -> str | None:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        return "must be a number"
    number = float(value)  # type: ignore[arg-type]
    if spec.allowed is not None and number not in spec.allowed:
        return _one_of(spec.allowed)
    if spec.min is not None and number < spec.min:
        return f"must be at least {spec.min:g}"
    if spec.max is not None and number > spec.max:
        return f"must be at most {spec.max:g}"
    if spec.step:
        steps = (number - (spec.min or 0.0)) / spec.step
        if abs(steps - round(steps)) > _STEP_SLACK * max(1.0, abs(steps)):
            return f"must be a multiple of {spec.step:g}" + (f" from {spec.min:g}" if spec.min else "")
    return None


def _count(value: list[object], spec: Input) -> str | None:
    if spec.min_length is not None and len(value) < spec.min_length:
        return f"must hold at least {spec.min_length} items"
    if spec.max_length is not None and len(value) > spec.max_length:
        return f"must hold at most {spec.max_length} items"
    return None


def _one_of(allowed: tuple[object, ...]) -> str:
    shown = ", ".join(json.dumps(v) if isinstance(v, str) else str(v) for v in allowed[:12])
    return f"must be one of {shown}{', ...' if len(allowed) > 12 else ''}"


def _inputs(raw: list[object], source: str) -> tuple[Input, ...]:
    if len(raw) > MAX_INPUTS:
        raise SchemaError(f"{source}: more than {MAX_INPUTS} inputs")
    out: list[Input] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        where = f"{source}: inputs[{index}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise SchemaError(f"{where}: an input without a name")
        name = item["name"]
        where = f"{source}: input {name!r}"
        if name in names:
            raise SchemaError(f"{where}: declared twice")
        names.add(name)
        kind = item.get("type")
        if kind not in INPUT_TYPES:
            raise SchemaError(f"{where}: unknown type {str(kind)[:40]!r}")
        rows = _inputs(item.get("inputs") or [], where) if kind == "inputs_array" else ()
        out.append(_input(item, name, str(kind), rows, where))
    return tuple(out)


def _input(item: Mapping[str, Any], name: str, kind: str, rows: tuple[Input, ...], where: str) -> Input:
    allowed = item.get("allowedValues")
    if allowed is not None and (not isinstance(allowed, list) or not allowed):
        raise SchemaError(f"{where}: allowedValues is not a list of values")
    return Input(
        name,
        kind,
        default=item.get("default"),
        allowed=tuple(allowed) if allowed is not None else None,
        min=_bound(item, "min", where),
        max=_bound(item, "max", where),
        step=_bound(item, "step", where, positive=True),
        min_length=_whole(item, "minLength", where),
        max_length=_whole(item, "maxLength", where),
        min_duration=_bound(item, "minDuration", where),
        max_duration=_bound(item, "maxDuration", where),
        max_size=_bound(item, "maxSize", where),
        required=_required(item.get("required"), where),
        prompt=item.get("prompt") is True,
        cost_impact=item["costImpact"] if type(item.get("costImpact")) is bool else None,
        kind=item["kind"] if isinstance(item.get("kind"), str) else None,
        rows=rows,
    )


def _bound(item: Mapping[str, Any], key: str, where: str, *, positive: bool = False) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or (positive and value <= 0):
        raise SchemaError(f"{where}: {key} is not a {'positive ' if positive else ''}number")
    return float(value)


def _whole(item: Mapping[str, Any], key: str, where: str) -> int | None:
    value = _bound(item, key, where)
    if value is None:
        return None
    if value < 0 or value != int(value):
        raise SchemaError(f"{where}: {key} is not a whole number")
    return int(value)


def _required(raw: object, where: str) -> Required:
    if raw is None or raw is False:
        return Required()
    if raw is True:
        return Required(always=True)
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: required is not a set of rules")
    conditional = raw.get("conditional")
    when: dict[str, tuple[object, ...]] = {}
    every = False
    if isinstance(conditional, Mapping) and isinstance(conditional.get("values"), Mapping):
        for name, values in conditional["values"].items():
            when[str(name)] = tuple(values) if isinstance(values, list) else (values,)
        every = conditional.get("operator") == "and"
    return Required(
        always=raw.get("always") is True,
        if_defined=_names(raw.get("ifDefined")),
        if_not_defined=_names(raw.get("ifNotDefined")),
        when=when,
        every=every,
    )


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, Mapping):
        return tuple(str(k) for k in value)
    if isinstance(value, str):
        return (value,)
    return ()


def _input_json(spec: Input) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "type": spec.type}
    for key, value in (
        ("default", spec.default),
        ("allowedValues", list(spec.allowed) if spec.allowed is not None else None),
        ("min", spec.min),
        ("max", spec.max),
        ("step", spec.step),
        ("minLength", spec.min_length),
        ("maxLength", spec.max_length),
        ("minDuration", spec.min_duration),
        ("maxDuration", spec.max_duration),
        ("maxSize", spec.max_size),
        ("kind", spec.kind),
        ("costImpact", spec.cost_impact),
    ):
        if value is not None:
            out[key] = value
    if spec.prompt:
        out["prompt"] = True
    rule = spec.required
    required: dict[str, Any] = {"always": rule.always}
    if rule.if_defined:
        required["ifDefined"] = dict.fromkeys(rule.if_defined, "")
    if rule.if_not_defined:
        required["ifNotDefined"] = dict.fromkeys(rule.if_not_defined, "")
    if rule.when:
        required["conditional"] = {
            "values": {k: list(v) for k, v in rule.when.items()},
            "operator": "and" if rule.every else "or",
        }
    out["required"] = required
    if spec.rows:
        out["inputs"] = [_input_json(row) for row in spec.rows]
    return out


__all__ = [
    "INPUT_TYPES",
    "Input",
    "ModelSchema",
    "Required",
    "SchemaError",
    "check_inputs",
    "given",
    "parse",
    "to_json",
]

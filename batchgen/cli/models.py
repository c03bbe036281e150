"""`models` and `models show ID`: the audio models batchgen knows, and one model's inputs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ..core.errors import UsageError
from ..core.schema import Input, ModelSchema
from ..store.schemas import MAKES, shipped, shipped_ids
from .common import EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    if args.show is None and args.model is None:
        _print_list()
        return EXIT_OK
    if args.show is None or args.model is None:
        raise UsageError("usage: batchgen models [show ID]")
    schema = shipped(args.model)
    if schema is None:
        raise UsageError(f"no schema ships for model {args.model!r}; `batchgen models` lists the ones that do")
    _print_schema(schema)
    return EXIT_OK


def _print_list() -> None:
    rows = []
    for model_id in shipped_ids():
        schema = shipped(model_id)
        if schema is not None:
            rows.append((model_id, MAKES.get(model_id, "-"), str(len(schema.inputs)), "shipped", schema.name or ""))
    _table(("ID", "MAKES", "INPUTS", "SCHEMA", "NAME"), rows)


def _print_schema(schema: ModelSchema) -> None:
    print(f"{schema.id}: {schema.name or ''} ({MAKES.get(schema.id, 'audio')}, shipped schema)")
    rows = [(i.name, i.type, _required(i), _shown(i.default), _limits(i)) for i in schema.inputs]
    _table(("INPUT", "TYPE", "REQUIRED", "DEFAULT", "LIMITS"), rows)


def _required(spec: Input) -> str:
    rule = spec.required
    if rule.always:
        return "yes"
    if rule.if_defined or rule.if_not_defined or rule.when:
        return "sometimes"
    return "no"


def _limits(spec: Input) -> str:
    parts = []
    if spec.min is not None or spec.max is not None:
        low = f"{spec.min:g}" if spec.min is not None else ""
        high = f"{spec.max:g}" if spec.max is not None else ""
        parts.append(f"{low}..{high}")
    if spec.step:
        parts.append(f"step {spec.step:g}")
    if spec.max_length is not None:
        parts.append(f"at most {spec.max_length:,} chars")
    if spec.allowed is not None:
        shown = ", ".join(_shown(v) for v in spec.allowed[:6])
        parts.append(f"one of {shown}{', ...' if len(spec.allowed) > 6 else ''} ({len(spec.allowed)})")
    return "; ".join(parts) or "-"


def _shown(value: object) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

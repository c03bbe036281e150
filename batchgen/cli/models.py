"""`models` and `models show ID`: the audio models batchgen knows, and one model's inputs."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from ..core.errors import ApiError, UsageError
from ..core.schema import Input, ModelSchema, SchemaError
from ..scenario.client import ScenarioClient
from ..store.schemas import MAKES, cached, cached_ids, remember, shipped, shipped_ids
from .common import EXIT_OK, _run_async, _with_client


def cmd_models(args: argparse.Namespace) -> int:
    if args.show is None and args.model is None:
        _print_list()
        return EXIT_OK
    if args.show is None or args.model is None:
        raise UsageError("usage: batchgen models [show ID [--live] [--simulate]]")
    if args.live or args.simulate:
        schema, where = _run_async(lambda: _with_client(lambda c: _live(c, args.model), simulate=args.simulate))
    else:
        schema, where = _known(args.model)
    _print_schema(schema, where)
    return EXIT_OK


def _known(model_id: str) -> tuple[ModelSchema, str]:
    """The freshest schema on this machine: a live one cached today, else the shipped one."""
    if (hit := cached(model_id)) is not None:
        return hit[0], f"live schema, fetched {time.strftime('%Y-%m-%d %H:%M', time.localtime(hit[1]))}"
    if (schema := shipped(model_id)) is not None:
        return schema, "shipped schema"
    raise UsageError(f"no schema known for model {model_id!r}; `batchgen models show {model_id} --live` asks the API")


async def _live(client: ScenarioClient, model_id: str) -> tuple[ModelSchema, str]:
    """`GET /models/{id}` now; an answer with no usable inputs falls back to the shipped schema."""
    try:
        schema = await client.get_model(model_id)
    except ApiError as err:
        if err.status == 404:  # a model id the API does not know: bad input, like a typo in a manifest
            raise UsageError(f"model {model_id!r} not found: {err}") from None
        raise
    except SchemaError as err:
        fallback = shipped(model_id)
        if fallback is None:
            raise UsageError(f"model {model_id}: {err}; no shipped schema to fall back on") from None
        return fallback, f"shipped schema (the live one is unusable: {err})"
    remember(schema)
    return schema, "live schema"


def _print_list() -> None:
    rows = []
    for model_id in sorted({*shipped_ids(), *cached_ids()}):
        try:
            schema, where = _known(model_id)
        except UsageError:
            continue  # a stale cache file of a model that ships no schema
        kind = "live" if where.startswith("live") else "shipped"
        rows.append((model_id, MAKES.get(model_id, "-"), str(len(schema.inputs)), kind, schema.name or ""))
    _table(("ID", "MAKES", "INPUTS", "SCHEMA", "NAME"), rows)


def _print_schema(schema: ModelSchema, where: str) -> None:
    print(f"{schema.id}: {schema.name or ''} ({MAKES.get(schema.id, 'audio')}, {where})")
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

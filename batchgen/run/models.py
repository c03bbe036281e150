"""The schemas a batch is checked against: recorded with it the first time it uses a model.

Outside a run, a manifest is checked against what this machine knows with no network:
the schema the batch recorded, else the shipped one, else a live one cached today. A
run asks the API (`GET /models/{id}`) for every model it uses that the batch has not
recorded, records the answer in `.batchgen/models/`, and from then on the recorded
schema is what the batch validates against, so a schema that changes upstream cannot
change a batch halfway. A newer live schema is reported once, with what differs;
`--refresh-models` records it instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ApiError, UsageError
from ..core.retry import Backoff, retry_call
from ..core.schema import ModelSchema, SchemaError
from ..manifest.parse import Manifest, UnknownModel, known_schema, load
from ..scenario.client import ScenarioClient
from ..store import schemas

MAX_MODELS = 100  # distinct models one manifest may name


class BatchSchemas:
    """`load`'s resolver: the batch's recorded schema, else one fetched this run, else shipped or cached."""

    def __init__(self, out: Path, *, refresh: bool = False) -> None:
        self.out = out
        self.refresh = refresh  # a live schema fetched this run wins over the recorded one
        self.live: dict[str, ModelSchema] = {}

    def __call__(self, batch: str, model_id: str) -> ModelSchema | None:
        if self.refresh and model_id in self.live:
            return self.live[model_id]
        if batch and (hit := schemas.recorded(self.out / batch, model_id)) is not None:
            return hit[0]
        return self.live.get(model_id) or known_schema(batch, model_id)


@dataclass(frozen=True, slots=True)
class Checked:
    """A manifest checked for a run, and the schemas to record with its batch once the run starts."""

    manifest: Manifest
    record: tuple[tuple[ModelSchema, str], ...] = ()

    def save(self, folder: Path) -> None:
        """Record the schemas (called once the whole batch has expanded, so a bad manifest writes nothing)."""
        for schema, source in self.record:
            schemas.record(folder, schema, source=source)


async def live_schema(client: ScenarioClient, model_id: str, policy: Backoff) -> tuple[ModelSchema, str]:
    """`GET /models/{id}` now (retried like any call); an unusable answer falls back to the shipped schema."""
    try:
        schema = await retry_call(policy, lambda: client.get_model(model_id))
    except ApiError as err:
        if err.status == 404:  # a model id the API does not know: bad input, like a typo
            raise UsageError(f"model {model_id!r} not found: {err}") from None
        raise
    except SchemaError as err:
        fallback = schemas.shipped(model_id)
        if fallback is None:
            raise UsageError(f"model {model_id}: {err}; no shipped schema to fall back on") from None
        return fallback, "shipped"
    schemas.remember(schema)
    return schema, "live"


async def load_for_run(
    path: str,
    resolve: BatchSchemas,
    client: ScenarioClient,
    policy: Backoff,
    *,
    refresh: bool,
    say: Callable[[str], None],
    loaded: Manifest | None = None,
) -> Checked:
    """The manifest checked against the schemas its batch records, and those it lacks, to record.

    `loaded` is the manifest as already read with `resolve`, if it could be (not read again).
    """
    while loaded is None:
        try:
            loaded = load(path, resolve)
        except UnknownModel as err:
            if err.model in resolve.live or len(resolve.live) >= MAX_MODELS:
                raise
            resolve.live[err.model] = (await live_schema(client, err.model, policy))[0]
    manifest = loaded
    folder = resolve.out / manifest.batch
    changed = False
    record: list[tuple[ModelSchema, str]] = []
    for model_id, model in manifest.models.items():
        hit = schemas.recorded(folder, model_id)
        if hit is not None and not refresh:
            await _compare(client, policy, folder, hit, say)
            continue
        schema, source = await _fresh(client, model_id, policy, resolve)
        if hit is not None and (differs := schemas.differences(hit[0], schema)):
            say(f"model {model_id}: the batch now uses the live schema ({', '.join(differs)})")
        record.append((schema, source))
        changed |= schema.digest() != model.digest
    return Checked(load(path, resolve) if changed else manifest, tuple(record))


async def _fresh(
    client: ScenarioClient, model_id: str, policy: Backoff, resolve: BatchSchemas
) -> tuple[ModelSchema, str]:
    if (schema := resolve.live.get(model_id)) is not None:
        return schema, "live"
    schema, source = await live_schema(client, model_id, policy)
    resolve.live[model_id] = schema
    return schema, source


async def _compare(
    client: ScenarioClient,
    policy: Backoff,
    folder: Path,
    hit: tuple[ModelSchema, str | None],
    say: Callable[[str], None],
) -> None:
    """Report, once, a live schema that differs from the recorded one (an unreachable API says nothing)."""
    recorded, noticed = hit
    try:
        live, _ = await live_schema(client, recorded.id, policy)
    except (ApiError, UsageError):
        return
    if live.digest() == recorded.digest() or live.digest() == noticed:
        return
    differs = ", ".join(schemas.differences(recorded, live)) or "its details"
    say(
        f"model {recorded.id}: the live schema differs from the one this batch recorded ({differs}); "
        "the batch keeps the recorded one, --refresh-models records the live one"
    )
    schemas.record(folder, recorded, source="live", noticed=live.digest())


__all__ = ["BatchSchemas", "Checked", "live_schema", "load_for_run"]

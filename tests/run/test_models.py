"""The schemas a batch records: the first run records them, later runs hold to them, a newer live one
is reported once, --refresh-models records it, and a model that ships none is asked of the API."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from batchgen import ManifestError, expand
from batchgen.core.errors import UsageError
from batchgen.core.retry import Backoff
from batchgen.core.schema import ModelSchema
from batchgen.manifest.parse import UnknownModel, load
from batchgen.run.models import BatchSchemas, load_for_run
from batchgen.scenario.client import ScenarioClient
from batchgen.store.schemas import recorded, shipped
from tests.conftest import Served

SFX = "model_elevenlabs-sound-effects-v2"
FAST = Backoff(base=0.01, cap=0.05, attempts=2)


def manifest(tmp_path: Path, model: str = SFX, seconds: float = 25) -> str:
    path = tmp_path / "m.yaml"
    text = f"""\
    batch: b
    model: {model}
    tracks:
      - name: wind
        prompt: wind through pines
        durationSeconds: {seconds}
    """
    path.write_text(textwrap.dedent(text))
    return str(path)


def narrower(schema: ModelSchema, model_id: str | None = None, most: float = 20.0) -> ModelSchema:
    """The same model with its duration capped at `most` seconds (and, if given, another id)."""
    inputs = tuple(dataclasses.replace(i, max=most) if i.name == "durationSeconds" else i for i in schema.inputs)
    return dataclasses.replace(schema, id=model_id or schema.id, inputs=inputs)


async def test_first_run_records_then_holds_and_reports_a_newer_schema_once(
    tmp_path: Path, served: Served, client: ScenarioClient
) -> None:
    said: list[str] = []
    path, out = manifest(tmp_path), tmp_path / "out"
    sfx = shipped(SFX)
    assert sfx is not None
    checked = await load_for_run(path, BatchSchemas(out), client, FAST, refresh=False, say=said.append)
    hit = recorded(out / "b", SFX)
    assert hit is not None and hit[0].digest() == sfx.digest() and said == []
    assert expand(checked, 1)[0].schema_digest == sfx.digest()

    served.sim.catalog[SFX] = narrower(sfx)  # upstream now caps the duration at 20 s
    for _ in range(2):
        checked = await load_for_run(path, BatchSchemas(out), client, FAST, refresh=False, say=said.append)
        assert expand(checked, 1)[0].params["durationSeconds"] == 25  # the recorded schema still holds
    assert len(said) == 1 and "~durationSeconds" in said[0] and "--refresh-models" in said[0]

    with pytest.raises(ManifestError) as info:  # recorded now: 25 s is past the live cap
        await load_for_run(path, BatchSchemas(out), client, FAST, refresh=True, say=said.append)
    assert info.value.field == "durationSeconds" and "at most 20" in info.value.message
    again = recorded(out / "b", SFX)
    assert again is not None and again[0].digest() == narrower(sfx).digest()
    # Offline commands now read the recorded schema too.
    with pytest.raises(ManifestError):
        load(path, BatchSchemas(out))


async def test_a_model_that_ships_no_schema_is_asked_of_the_api_and_recorded(
    tmp_path: Path, served: Served, client: ScenarioClient
) -> None:
    sfx = shipped(SFX)
    assert sfx is not None
    served.sim.catalog["model_studio-custom-sfx"] = narrower(sfx, "model_studio-custom-sfx", most=30.0)
    path, out = manifest(tmp_path, "model_studio-custom-sfx"), tmp_path / "out"
    with pytest.raises(UnknownModel):
        load(path, BatchSchemas(out))  # offline: not shipped, not cached, not recorded
    checked = await load_for_run(path, BatchSchemas(out), client, FAST, refresh=False, say=print)
    task = expand(checked, 1)[0]
    assert task.model == "model_studio-custom-sfx" and task.params["text"] == "wind through pines"
    assert load(path, BatchSchemas(out)).models["model_studio-custom-sfx"].id == "model_studio-custom-sfx"


async def test_a_model_the_api_does_not_know_is_one_line(tmp_path: Path, client: ScenarioClient) -> None:
    path = manifest(tmp_path, "model_no-such-thing")
    with pytest.raises(UsageError) as info:
        await load_for_run(path, BatchSchemas(tmp_path / "out"), client, FAST, refresh=False, say=print)
    assert "model_no-such-thing" in str(info.value) and "not found" in str(info.value)


def test_a_damaged_recorded_schema_is_named(tmp_path: Path) -> None:
    path, out = manifest(tmp_path), tmp_path / "out"
    folder = out / "b" / ".batchgen" / "models"
    folder.mkdir(parents=True)
    (folder / f"{SFX}.json").write_text(json.dumps({"model": {"id": SFX, "inputs": "nope"}}))
    with pytest.raises(ManifestError) as info:
        load(path, BatchSchemas(out))
    assert info.value.line == 2 and SFX in info.value.message and "\n" not in str(info.value)

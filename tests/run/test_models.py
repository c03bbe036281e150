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
    assert recorded(out / "b", SFX) is None  # recorded only once the run starts: a bad batch writes nothing
    checked.save(out / "b")
    hit = recorded(out / "b", SFX)
    assert hit is not None and hit[0].digest() == sfx.digest() and said == []
    assert expand(checked.manifest, 1)[0].schema_digest == sfx.digest()

    served.sim.catalog[SFX] = narrower(sfx)  # upstream now caps the duration at 20 s
    for _ in range(2):
        checked = await load_for_run(path, BatchSchemas(out), client, FAST, refresh=False, say=said.append)
        assert checked.record == ()
        assert expand(checked.manifest, 1)[0].params["durationSeconds"] == 25  # the recorded schema holds
    assert len(said) == 1 and "~durationSeconds" in said[0] and "--refresh-models" in said[0]

    with pytest.raises(ManifestError) as info:  # refreshed: 25 s is past the live cap
        await load_for_run(path, BatchSchemas(out, refresh=True), client, FAST, refresh=True, say=said.append)
    assert info.value.field == "durationSeconds" and "at most 20" in info.value.message
    kept = recorded(out / "b", SFX)
    assert kept is not None and kept[0].digest() == sfx.digest()  # a refused refresh records nothing
    path = manifest(tmp_path, seconds=15)
    checked = await load_for_run(path, BatchSchemas(out, refresh=True), client, FAST, refresh=True, say=said.append)
    checked.save(out / "b")
    again = recorded(out / "b", SFX)
    assert again is not None and again[0].digest() == narrower(sfx).digest()
    # Offline commands now read the recorded schema too.
    with pytest.raises(ManifestError):
        load(manifest(tmp_path, seconds=25), BatchSchemas(out))


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
    checked.save(out / "b")
    task = expand(checked.manifest, 1)[0]
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


CLONE = {
    "id": "model_test-voice-clone",
    "inputs": [
        {"name": "text", "type": "string", "required": {"always": True}},
        {"name": "audio", "type": "file", "required": {"always": True}, "maxSize": 400000, "maxDuration": 10},
        {"name": "references", "type": "file_array", "maxLength": 3},
    ],
}


def clone_manifest(tmp_path: Path, audio: str, refs: list[str]) -> Path:
    path = tmp_path / "clone.yaml"
    text = f"""\
    batch: clone
    model: model_test-voice-clone
    tracks:
      - name: line-1
        prompt: Welcome back
        audio: {audio}
        references: {json.dumps(refs)}
      - name: line-2
        prompt: See you soon
        audio: {audio}
    """
    path.write_text(textwrap.dedent(text))
    return path


def wav(path: Path, seconds: float) -> str:
    from batchgen.simulator.audio import render

    path.write_bytes(render("reference voice", 1, seconds, channels=1))
    return path.name


async def test_file_and_file_array_inputs_are_uploaded_once_each_and_sent_as_assets(
    tmp_path: Path, served: Served, client: ScenarioClient
) -> None:
    from batchgen.core.schema import parse
    from batchgen.run.progress import Reporter
    from batchgen.run.runner import Runner

    from ..helpers import fast

    schema = parse(CLONE, "test")
    served.sim.catalog[schema.id] = schema
    voice, ref = wav(tmp_path / "voice.wav", 2), wav(tmp_path / "ref.wav", 1)
    path = clone_manifest(tmp_path, voice, [ref, "asset_existing"])
    manifest = load(path, lambda batch, model: schema if model == schema.id else shipped(model))
    tasks = expand(manifest, 1)
    assert tasks[0].audio_sha256 and tasks[0].file_input == "audio" and tasks[0].more_files[0].index == 0
    assert tasks[0].digest != tasks[1].digest
    assert tasks[0].params["references"] == [ref, "asset_existing"]  # an asset id is sent as it is
    path = clone_manifest(tmp_path, voice, [ref])
    manifest = load(path, lambda batch, model: schema if model == schema.id else shipped(model))
    result = await Runner(manifest, client, fast(tmp_path / "out"), Reporter(quiet=True)).run()
    assert result.done == 2 and not result.failed
    assert served.sim.requests["POST /v1/uploads"] == 2  # voice.wav once for both lines, ref.wav once
    bodies = [job.params for job in served.sim.jobs.values()]
    assert all(b["audio"].startswith("asset_") for b in bodies)
    assert next(b["references"] for b in bodies if "references" in b)[0].startswith("asset_")


def test_a_file_past_its_input_limits_is_refused_before_upload(tmp_path: Path) -> None:
    from batchgen.core.schema import parse

    schema = parse(CLONE, "test")
    resolve = lambda batch, model: schema  # noqa: E731
    long_voice = wav(tmp_path / "long.wav", 12)
    with pytest.raises(ManifestError) as info:
        expand(load(clone_manifest(tmp_path, long_voice, []), resolve), 1)
    assert info.value.field == "audio" and "lasts 12.0s, more than the 10s" in info.value.message
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF\0\0\0\0WAVE" + b"\0" * 499_992)
    with pytest.raises(ManifestError) as info:
        expand(load(clone_manifest(tmp_path, "big.wav", []), resolve), 1)
    assert info.value.field == "audio" and "500,004 bytes, more than the 400,000" in info.value.message

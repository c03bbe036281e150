"""Manifests naming any model with a schema: keys, prompt mapping, seeds, loops, errors, prices."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from batchgen import ManifestError, expand, load
from batchgen.core.task import SEED_MAX, text_band
from batchgen.manifest.parse import UnknownModel
from batchgen.store.cost import pricing_body, shape

SFX = "model_elevenlabs-sound-effects-v2"
TTS = "model_elevenlabs-tts-v3"
MMA = "model_mm-audio-2-t2a"
MINIMAX = "model_minimax-music-2-6"


def tasks_of(tmp_path: Path, text: str, csv: str | None = None) -> list:  # type: ignore[type-arg]
    if csv is not None:
        (tmp_path / "lines.csv").write_text(textwrap.dedent(csv))
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return expand(load(path), 1)


def error_of(tmp_path: Path, text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        tasks_of(tmp_path, text)
    return info.value


def test_model_at_the_top_in_defaults_per_track_and_prompt_maps_to_text(tmp_path: Path) -> None:
    tasks = tasks_of(
        tmp_path,
        f"""\
        batch: b
        model: {SFX}
        defaults:
          durationSeconds: 4
        tracks:
          - name: rain
            prompt: soft rain on leaves
          - name: drum
            model: model_meta-musicgen
            prompt: war drums
            duration: 5
        """,
    )
    rain, drum = tasks
    assert rain.model == SFX and rain.params["text"] == "soft rain on leaves" and "prompt" not in rain.params
    assert rain.params["durationSeconds"] == 4 and rain.prompt == "soft rain on leaves"
    assert "seed" not in rain.params and rain.seed is None  # the model takes no seed
    # The default meant for the SFX model is not sent to MusicGen, which does not take it.
    assert drum.model == "model_meta-musicgen" and "durationSeconds" not in drum.params
    assert drum.params["prompt"] == "war drums" and isinstance(drum.seed, int)
    assert rain.schema_digest and drum.schema_digest and rain.schema_digest != drum.schema_digest


def test_model_swept_and_from_a_csv_column(tmp_path: Path) -> None:
    tasks = tasks_of(
        tmp_path,
        f"""\
        batch: b
        sweep:
          model: [{SFX}, model_beatoven-sound-effect]
        tracks:
          - name: door
            prompt: creaky wooden door
        """,
    )
    assert [t.model for t in tasks] == [SFX, "model_beatoven-sound-effect"]
    assert tasks[0].params["text"] == tasks[1].params["prompt"] == "creaky wooden door"
    lines = tasks_of(
        tmp_path,
        """\
        batch: b
        tracks_file: lines.csv
        """,
        csv=f"""\
        name,model,prompt,publicVoice,speed
        hi,{TTS},Hello there,Brian,0.9
        bye,{TTS},Goodbye,Jessica,
        """,
    )
    assert lines[0].params == {"text": "Hello there", "publicVoice": "Brian", "speed": 0.9, "seed": lines[0].seed}
    assert "speed" not in lines[1].params and lines[1].params["publicVoice"] == "Jessica"


@pytest.mark.parametrize(
    ("body", "line", "field", "fragment"),
    [
        # an input another model has, but not this one: named, with a hint, at its line
        ("    prompt: x\n    duraton: 3\n", 6, "duraton", "did you mean"),
        ("    prompt: x\n    duration: 3\n", 6, "duration", "unknown key"),
        ("    prompt: x\n    durationSeconds: 31\n", 6, "durationSeconds", "at most 30"),
        ("    prompt: x\n    outputFormat: flac\n", 6, "outputFormat", "must be one of"),
        ("    prompt: x\n    text: y\n", 5, "prompt", "not both"),
        ("    durationSeconds: 3\n", 4, "prompt", "is required"),  # text is required: said as prompt
        ("    prompt: x\n    length: 45\n", 6, "length", "at most 30s in one job"),
        ("    prompt: x\n    loop: {bpm: 60, bars: 16}\n", 6, "loop", "at most 30s in one job"),
        ("    prompt: x\n    seed: 5\n", 6, "seed", "takes no seed"),
    ],
)
def test_schema_errors_name_file_line_and_field(
    tmp_path: Path, body: str, line: int, field: str, fragment: str
) -> None:
    err = error_of(tmp_path, f"batch: b\nmodel: {SFX}\ntracks:\n  - name: a\n{body}")
    assert err.path.endswith("m.yaml") and err.line == line, str(err)
    assert err.field == field, str(err)
    assert fragment in err.message, str(err)


def test_loop_true_only_for_a_model_with_a_loop_input(tmp_path: Path) -> None:
    tasks = tasks_of(tmp_path, f"batch: b\nmodel: {SFX}\ntracks:\n  - name: a\n    prompt: wind\n    loop: true\n")
    assert tasks[0].params["loop"] is True and not tasks[0].shaped
    for model in ("model_meta-musicgen", MMA):
        err = error_of(tmp_path, f"batch: b\nmodel: {model}\ntracks:\n  - name: a\n    prompt: wind\n    loop: true\n")
        assert err.field == "loop" and err.line == 6 and "has no loop input" in err.message, str(err)


def test_a_cut_loop_and_a_length_in_one_job_for_a_model_that_cannot_continue(tmp_path: Path) -> None:
    loop, long = tasks_of(
        tmp_path,
        f"""\
        batch: b
        model: {SFX}
        tracks:
          - name: groove
            prompt: hand drum groove
            loop: {{bpm: 120, bars: 4}}
          - name: wind
            prompt: wind
            length: 12.5
        """,
    )
    assert loop.shaped and len(loop.hops) == 1 and loop.loop is not None
    body = loop.hop_body(0, None)
    assert body["durationSeconds"] == 9.0 and "duration" not in body and "seed" not in body  # 8 s + crossfade
    assert not long.shaped and long.params["durationSeconds"] == 12.5


def test_seeds_keep_to_the_model_range_and_musicgen_is_unchanged(tmp_path: Path) -> None:
    text = "batch: b\nmodel: {}\ntakes: 40\ntracks:\n  - name: a\n    prompt: p\n"
    narrow = tasks_of(tmp_path, text.format(MMA))
    musicgen = tasks_of(tmp_path, text.format("model_meta-musicgen"))
    assert all(0 <= t.seed <= 65535 for t in narrow)
    assert len({t.seed for t in narrow}) == 40
    assert any(t.seed > 65535 for t in musicgen) and all(0 <= t.seed <= SEED_MAX for t in musicgen)
    # A fixed track seed too: seed, seed+1, ... wrapped into the model's range.
    fixed = tasks_of(
        tmp_path, f"batch: b\nmodel: {MMA}\ntakes: 2\ntracks:\n  - name: a\n    prompt: p\n    seed: 65535\n"
    )
    assert [t.seed for t in fixed] == [65535, 0]


def test_a_model_without_seed_keeps_its_takes_apart_by_name(tmp_path: Path) -> None:
    tasks = tasks_of(tmp_path, f"batch: b\nmodel: {MINIMAX}\ntakes: 3\ntracks:\n  - name: song\n    prompt: folk\n")
    assert [t.name for t in tasks] == ["song-t1", "song-t2", "song-t3"]
    assert all("seed" not in t.params for t in tasks)


def test_an_unknown_model_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UnknownModel) as info:
        tasks_of(tmp_path, "batch: b\ntracks:\n  - name: a\n    model: model_nobody-knows\n    prompt: p\n")
    assert info.value.model == "model_nobody-knows" and info.value.line == 4 and "\n" not in str(info.value)
    err = error_of(tmp_path, "batch: b\ntracks:\n  - name: a\n    model: ../../etc\n    prompt: p\n")
    assert err.line == 4 and "not a Scenario model id" in err.message


def test_a_value_is_checked_by_every_model_that_may_receive_it(tmp_path: Path) -> None:
    """defaults go to every model that takes them: a value one of them refuses is refused."""
    err = error_of(
        tmp_path,
        f"""\
        batch: b
        defaults:
          duration: 40
        tracks:
          - name: a
            model: model_beatoven-sound-effect
            prompt: p
          - name: b
            model: {MMA}
            prompt: p
        """,
    )
    assert err.line == 3 and err.field == "defaults.duration" and "at most" in err.message, str(err)


def test_voice_lines_cost_a_dry_run_per_voice_and_band_priced_by_the_longest_text(tmp_path: Path) -> None:
    rows = "".join(f"l{i},{'x' * (10 + i)},Brian\n" for i in range(40)) + "long,{},Brian\n".format("y" * 100)
    tasks = tasks_of(
        tmp_path, f"batch: b\nmodel: {TTS}\ntracks_file: lines.csv\n", csv="name,prompt,publicVoice\n" + rows
    )
    shapes = {shape(t) for t in tasks}
    assert len(shapes) == 2  # texts of 10..49 characters share the 64 band; the 100 one has its own
    short = [t for t in tasks if len(t.prompt) <= 64]
    assert {t.price_text for t in short} == {"x" * 49}  # the band's longest text is what is priced
    assert all(pricing_body(t, 0, None)["text"] == "x" * 49 for t in short)
    assert text_band(49) == 64 and text_band(65) == 128 and text_band(0) == 64


def test_musicgen_prices_ignore_the_prompt_as_before(tmp_path: Path) -> None:
    tasks = tasks_of(tmp_path, "batch: b\ntracks:\n  - name: a\n    prompt: p\n  - name: b\n    prompt: much longer\n")
    assert shape(tasks[0]) == shape(tasks[1]) and tasks[0].price_text is None

"""Manifest loading, validation errors and expansion into tasks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen import ManifestError, expand, load
from batchgen.cli import main
from batchgen.simulator.audio import render

BASE = """\
batch: test-batch
seed: 42
tracks:
  - name: one
    prompt: calm forest
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        m = load(write(tmp_path, text))
        expand(m, 1)
    return info.value


# (manifest text, expected line, expected field, a fragment of the message)
BAD = [
    ("batch: x\ntracks: [\n", 3, None, "YAML syntax error"),
    ("- just\n- a list\n", 1, None, "must be a mapping"),
    ("tracks:\n  - name: a\n    prompt: p\n", 1, "batch", "is required"),
    ("batch: x\n", 1, "tracks", "at least one track"),
    ("batch: x\ntrack:\n  - name: a\n", 2, "track", "did you mean 'tracks'"),
    (
        "batch: x\ntracks:\n  - name: a\n    prompt: p\n    temprature: 1\n",
        5,
        "temprature",
        "did you mean 'temperature'",
    ),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    duration: long\n", 5, "duration", "must be a number"),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    duration: 0\n", 5, "duration", "at least 1"),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    duration: 31\n", 5, "duration", "at most 30"),
    (
        "batch: x\ntracks:\n  - name: a\n    prompt: p\n    classifierFreeGuidance: 11\n",
        5,
        "classifierFreeGuidance",
        "at most 10",
    ),
    ("batch: x\ntakes: 0\ntracks:\n  - name: a\n    prompt: p\n", 2, "takes", "between 1"),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    takes: -2\n", 5, "takes", "between 1"),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    modelVersion: huge\n", 5, "modelVersion", "unknown value"),
    (
        "batch: x\ndefaults:\n  normalizationStrategy: loud\ntracks:\n  - name: a\n    prompt: p\n",
        3,
        "defaults.normalizationStrategy",
        "unknown value",
    ),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n  - name: a\n    prompt: q\n", 5, "name", "duplicate track name"),
    ("batch: x\ntracks:\n  - name: a/b\n    prompt: p\n", 3, "name", "only letters"),
    ("batch: x\ntracks:\n  - name: ..\n    prompt: p\n", 3, "name", "not start with '.'"),
    ("batch: ../up\ntracks:\n  - name: a\n    prompt: p\n", 1, "batch", "only letters"),
    ("batch: x\ntracks:\n  - name: a b\n    prompt: p\n", 3, "name", "only letters"),
    (
        "batch: x\nfilename: '{track}-{tkae}'\ntracks:\n  - name: a\n    prompt: p\n",
        2,
        "filename",
        "did you mean 'take'",
    ),
    (
        "batch: x\nfilename: '../{track}'\ntracks:\n  - name: a\n    prompt: p\n",
        2,
        "filename",
        "leave the batch folder",
    ),
    (
        "batch: x\nfilename: 'out/{track}'\ntracks:\n  - name: a\n    prompt: p\n",
        2,
        "filename",
        "leave the batch folder",
    ),
    (
        "batch: x\nzip:\n  temperature: [1, 2]\n  classifierFreeGuidance: [1]\ntracks:\n  - name: a\n    prompt: p\n",
        2,
        "zip",
        "equal lengths",
    ),
    ("batch: x\ntracks:\n  - name: a\n    prompt: ''\n", 4, "prompt", "non-empty prompt"),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    continuation: true\n", 5, "continuation", "needs inputAudio"),
    (
        "batch: x\ntracks:\n  - name: a\n    prompt: p\n    multiBandDiffusion: true\n",
        5,
        "multiBandDiffusion",
        "stereo",
    ),
    (
        "batch: x\ntracks:\n  - name: a\n    prompt: p\n    continuationStart: 5\n    continuationEnd: 2\n",
        5,
        "continuationStart",
        "after continuationEnd",
    ),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    inputAudio: nope.wav\n", 5, "inputAudio", "not found"),
    ("batch: x\ntracks_file: nope.csv\n", 2, "tracks_file", "not found"),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    seed: 1.5\n", 5, "seed", "whole number"),
    ("batch: x\nbatch: y\ntracks:\n  - name: a\n    prompt: p\n", 2, "batch", "duplicate key"),
    ("batch: x\nsweep:\n  temperature: []\ntracks:\n  - name: a\n    prompt: p\n", 3, "sweep.temperature", "non-empty"),
    (
        "batch: x\nsweep:\n  temperature: [0]\ntracks:\n  - name: a\n    prompt: p\n",
        3,
        "sweep.temperature",
        "greater than 0",
    ),
    ("batch: x\ntracks:\n  - name: a\n    prompt: p\n    duration: true\n", 5, "duration", "must be a number"),
    ("batch: x\nmodel: model_other\ntracks:\n  - name: a\n    prompt: p\n", 2, "model", "no schema is known"),
    (
        "batch: x\nsweep:\n  temperature: [1, 2]\ntracks:\n  - name: a\n    prompt: p\n    temperature: 1\n",
        7,
        "temperature",
        "varied by sweep",
    ),
    (
        "batch: x\nfilename: '{track}'\ntakes: 2\ntracks:\n  - name: a\n    prompt: p\n",
        2,
        "filename",
        "also the name of",
    ),
    (
        "batch: x\ntracks:\n  - name: a-t2\n    prompt: p\n  - name: a\n    prompt: p\n    takes: 2\n",
        5,
        "name",
        "also the name of",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "fragment"), BAD)
def test_bad_input_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, fragment: str
) -> None:
    """Each kind of bad manifest raises one ManifestError with the right line, field and reason."""
    err = error_of(tmp_path, text)
    assert err.path.endswith("m.yaml")
    assert err.line == line, str(err)
    assert err.field == field, str(err)
    assert fragment in err.message, str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize(("text", "line", "field", "fragment"), BAD[:6])
def test_cli_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, field: str | None, fragment: str
) -> None:
    """`validate` prints one line naming file:line and exits 2, writing nothing."""
    path = write(tmp_path, text)
    before = set(tmp_path.iterdir())
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"m.yaml:{line}:" in err
    assert fragment in err
    assert set(tmp_path.iterdir()) == before


def test_no_traceback_from_the_real_entry_point(tmp_path: Path) -> None:
    """The installed entry point turns bad YAML into one line and exit 2, no traceback."""
    path = write(tmp_path, "batch: x\ntracks: [\n")
    proc = subprocess.run([sys.executable, "-m", "batchgen", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_missing_manifest_file(tmp_path: Path) -> None:
    """A manifest path that does not exist is a manifest error, not a crash."""
    with pytest.raises(ManifestError, match="no such manifest"):
        load(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("rows", "line", "fragment"),
    [
        ("name,prompt,duration\na,p,8\nb,q,99\n", 3, "at most 30"),
        ("name,prompt,duration\na,p,8\nb,q\n", 3, "cells"),
        ("name,prompt,temprature\na,p,1\n", 2, "did you mean 'temperature'"),
        ("name,prompt\na,p\na,q\n", 3, "duplicate track name"),
        ("name,prompt\nbad/name,p\n", 2, "only letters"),
    ],
)
def test_tracks_file_bad_row_names_the_row(tmp_path: Path, rows: str, line: int, fragment: str) -> None:
    """A bad CSV row is reported with the CSV's path and the row's line."""
    (tmp_path / "more.csv").write_text(rows)
    err = error_of(tmp_path, "batch: x\ntracks_file: more.csv\n")
    assert err.path.endswith("more.csv")
    assert err.line == line
    assert fragment in err.message


def test_tracks_file_formats_add_tracks(tmp_path: Path) -> None:
    """CSV (typed cells, empty = default), JSONL and YAML track files all add tracks after the inline ones."""
    (tmp_path / "a.csv").write_text('name,prompt,duration,continuation\nc1,"calm, slow",12,\nc2,fast,,false\n')
    (tmp_path / "b.jsonl").write_text('{"name": "j1", "prompt": "p", "temperature": 0.5}\n\n')
    (tmp_path / "c.yml").write_text("- name: y1\n  prompt: p\n  takes: 2\n")
    for file, names in (
        ("a.csv", ["one", "c1", "c2"]),
        ("b.jsonl", ["one", "j1"]),
        ("c.yml", ["one", "y1-t1", "y1-t2"]),
    ):
        m = load(write(tmp_path, BASE + f"tracks_file: {file}\n"))
        tasks = expand(m)
        assert [t.name for t in tasks] == names
    m = load(write(tmp_path, BASE + "tracks_file: a.csv\n"))
    c1, c2 = expand(m)[1:]
    assert c1.params["duration"] == 12 and c1.params["prompt"] == "calm, slow"
    assert "duration" not in c2.params and c2.params["continuation"] is False


def test_jsonl_bad_line(tmp_path: Path) -> None:
    """A JSONL line that is not JSON is reported with its line number."""
    (tmp_path / "b.jsonl").write_text('{"name": "a", "prompt": "p"}\n{oops\n')
    err = error_of(tmp_path, "batch: x\ntracks_file: b.jsonl\n")
    assert (err.line, err.path.endswith("b.jsonl")) == (2, True)


def test_expansion_order_names_and_params(tmp_path: Path) -> None:
    """Track x take x sweep x zip, in that order, with SPEC names and merged params."""
    m = load(
        write(
            tmp_path,
            """\
            batch: b
            seed: 1
            defaults: {duration: 10, temperature: 1}
            tracks:
              - {name: a, prompt: p, takes: 2}
              - {name: b, prompt: q, duration: 5}
            sweep:
              classifierFreeGuidance: [2, 4]
            zip:
              normalizationStrategy: [peak, rms]
              continuationStart: [0, 1]
            """,
        )
    )
    tasks = expand(m)
    assert len(tasks) == m.task_count() == 2 * 2 * 2 + 1 * 2 * 2
    assert tasks[0].name == "a-t1-classifierFreeGuidance2-normalizationStrategypeak-continuationStart0"
    assert [t.name.split("-")[0:2] for t in tasks[:8]] == [["a", "t1"]] * 4 + [["a", "t2"]] * 4
    last = tasks[-1]
    assert last.name == "b-classifierFreeGuidance4-normalizationStrategyrms-continuationStart1"
    assert last.params["duration"] == 5 and last.params["temperature"] == 1
    assert last.params["normalizationStrategy"] == "rms" and last.params["classifierFreeGuidance"] == 4


def test_filename_template(tmp_path: Path) -> None:
    """A template may use track, take, seed and parameters; text values are made file-name safe."""
    m = load(
        write(
            tmp_path,
            """\
            batch: b
            seed: 5
            filename: "{track}_{take}_{temperature:.1f}_{modelVersion}_{seed}"
            sweep: {temperature: [0.5, 1.25]}
            tracks: [{name: a, prompt: p, takes: 2}]
            """,
        )
    )
    tasks = expand(m)
    assert tasks[0].name == f"a_1_0.5_stereo-melody-large_{tasks[0].seed}"
    assert tasks[1].name.startswith("a_1_1.2")


def test_seeds_explicit_derived_and_random(tmp_path: Path) -> None:
    """A track seed wins (takes count up from it); otherwise seeds derive from the base seed."""
    m = load(
        write(
            tmp_path,
            "batch: b\nseed: 9\ntracks:\n  - {name: a, prompt: p, seed: 100, takes: 3}\n  - {name: b, prompt: p}\n",
        )
    )
    a1, a2, a3, b = expand(m)
    assert (a1.seed, a2.seed, a3.seed) == (100, 101, 102)
    assert b.seed == expand(m)[3].seed
    no_seed = load(write(tmp_path, "batch: b\ntracks:\n  - {name: a, prompt: p}\n"))
    assert expand(no_seed, 1)[0].seed != expand(no_seed, 2)[0].seed
    with pytest.raises(ValueError):
        expand(no_seed)


def test_input_audio_digest_follows_content(tmp_path: Path) -> None:
    """inputAudio is hashed by content: moving the file keeps the digest, editing it changes it."""
    (tmp_path / "mel.wav").write_bytes(render("theme", 1, 1.0, 1))
    text = "batch: b\nseed: 1\ntracks:\n  - {name: a, prompt: p, inputAudio: mel.wav}\n"
    first = expand(load(write(tmp_path, text)))[0]
    assert first.input_audio == str((tmp_path / "mel.wav").resolve())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "moved.wav").write_bytes((tmp_path / "mel.wav").read_bytes())
    moved = expand(load(write(tmp_path, text.replace("mel.wav", "sub/moved.wav"))))[0]
    assert moved.digest == first.digest
    (tmp_path / "mel.wav").write_bytes(render("theme", 2, 1.0, 1))
    assert expand(load(write(tmp_path, text)))[0].digest != first.digest
    assert first.body("asset_abc")["inputAudio"] == "asset_abc"


def test_example_manifests_are_valid() -> None:
    """Every manifest users copy from manifests/ validates."""
    root = Path(__file__).parent.parent.parent / "manifests"
    examples = sorted(root.glob("*.yaml"))
    assert len(examples) >= 4
    for path in examples:
        assert expand(load(path), 1)


names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    tracks=st.lists(names, min_size=2, max_size=6, unique=True),
    drop=st.integers(min_value=0, max_value=5),
    base=st.integers(min_value=0, max_value=2**31),
    takes=st.integers(min_value=1, max_value=3),
)
def test_seeds_and_digests_stable_when_tracks_change(
    tmp_path_factory: pytest.TempPathFactory, tracks: list[str], drop: int, base: int, takes: int
) -> None:
    """Removing a track changes no other task's name, seed or digest."""
    tmp = tmp_path_factory.mktemp("m")
    body = "".join(f"  - {{name: '{n}', prompt: 'prompt {n}'}}\n" for n in tracks)  # quoted: 'on' is a boolean in YAML
    full = {t.name: t for t in expand(load(write(tmp, f"batch: b\ntakes: {takes}\nseed: {base}\ntracks:\n{body}")))}
    kept = [n for i, n in enumerate(tracks) if i != drop % len(tracks)]
    body = "".join(f"  - {{name: '{n}', prompt: 'prompt {n}'}}\n" for n in kept)
    fewer = expand(load(write(tmp, f"batch: b\ntakes: {takes}\nseed: {base}\ntracks:\n{body}")))
    assert len(fewer) == len(kept) * takes
    for task in fewer:
        assert (task.seed, task.digest) == (full[task.name].seed, full[task.name].digest)


values = st.one_of(
    st.tuples(st.just("duration"), st.integers(min_value=1, max_value=30)),
    st.tuples(st.just("temperature"), st.floats(min_value=0.1, max_value=3, allow_nan=False)),
    st.tuples(st.just("classifierFreeGuidance"), st.integers(min_value=0, max_value=10)),
    st.tuples(st.just("normalizationStrategy"), st.sampled_from(["loudness", "clip", "peak", "rms"])),
)


@settings(max_examples=80, deadline=None)
@given(a=values, b=values)
def test_digest_changes_iff_what_is_sent_changes(
    tmp_path_factory: pytest.TempPathFactory, a: tuple[str, object], b: tuple[str, object]
) -> None:
    """Two manifests give the same digest exactly when their request bodies are equal."""
    tmp = tmp_path_factory.mktemp("d")

    def task(pair: tuple[str, object]) -> object:
        return expand(
            load(write(tmp, f"batch: b\nseed: 3\ntracks:\n  - {{name: a, prompt: p, {pair[0]}: {pair[1]!r}}}\n"))
        )[0]

    ta, tb = task(a), task(b)
    assert (ta.digest == tb.digest) == (dict(ta.params) == dict(tb.params))  # type: ignore[attr-defined]


def test_plan_lists_every_task_as_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`plan --json` prints one row per task with name, digest and status `new` before any run."""
    path = write(tmp_path, BASE.replace("prompt: calm forest", "prompt: calm forest\n    takes: 3"))
    assert main(["plan", str(path), "--json", "--out", str(tmp_path / "out")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["one-t1", "one-t2", "one-t3"]
    assert {r["status"] for r in rows} == {"new"}
    assert len({r["digest"] for r in rows}) == 3


def test_one_text_value_is_bounded_wherever_it_is_written(tmp_path: Path) -> None:
    """A 1 MB prompt is refused in one line naming its line and field, in YAML and in a tracks_file."""
    big = "x" * (1024 * 1024)
    err = error_of(tmp_path, f"batch: b\ntracks:\n  - name: a\n    prompt: {big}\n")
    assert (err.line, err.field) == (4, "prompt") and "at most 65,536" in str(err)
    (tmp_path / "t.jsonl").write_text(json.dumps({"name": "a", "prompt": big}) + "\n")
    err = error_of(tmp_path, "batch: b\ntracks_file: t.jsonl\n")
    assert "t.jsonl" in str(err) and "at most 65,536" in str(err)


def test_aliases_of_one_long_text_cannot_amplify_a_manifest(tmp_path: Path) -> None:
    """600 aliases of a 60 KB prompt (36 MB from a 64 KB file) are refused at the alias that passes
    the bound; 30 of them are an ordinary manifest."""
    text = "y" * 60_000

    def manifest(aliases: int) -> str:
        tracks = "".join(f"  - {{name: t{i}, prompt: *p}}\n" for i in range(1, aliases))
        return f"batch: b\ntracks:\n  - {{name: t0, prompt: &p {text}}}\n{tracks}"

    err = error_of(tmp_path, manifest(600))
    assert "aliases expand to more than 32 MB of text" in str(err) and err.line is not None
    (tmp_path / "ok.yaml").write_text(manifest(30))
    assert len(expand(load(tmp_path / "ok.yaml"), 1)) == 30


def test_takes_and_sweeps_cannot_multiply_text_past_the_bound(tmp_path: Path) -> None:
    """1,000 takes of five 60 KB prompts (300 MB of sidecar and page text) are refused, naming the track."""
    tracks = "".join(f"  - {{name: t{i}, prompt: {chr(97 + i) * 60_000}}}\n" for i in range(5))
    (tmp_path / "m.yaml").write_text(f"batch: b\ntakes: 1000\ntracks:\n{tracks}")
    with pytest.raises(ManifestError, match="more than 256 MB of prompt text"):
        expand(load(tmp_path / "m.yaml"), 1)

"""The command line in-process: parsing, dispatch, exit codes and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.cli.app import main
from batchgen.cli.args import build_parser

MANIFEST = """\
batch: cli
seed: 1
defaults: {duration: 1}
tracks:
  - {name: a, prompt: "a"}
  - {name: b, prompt: "b", takes: 2}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    return path


def test_validate_and_plan(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(manifest)]) == 0
    assert main(["plan", str(manifest), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "b-t2" in out and "3 tasks: 3 new" in out


@pytest.mark.parametrize(
    "bad", [["--rate", "0"], ["--max-in-flight", "-1"], ["--max-cost", "nan"], ["--rate", "1e999"]]
)
def test_a_bad_number_is_one_line_and_exit_2(
    manifest: Path, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["run", str(manifest), *bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) <= 2 and bad[0] in err and "Traceback" not in err


def test_a_missing_manifest_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yaml" in err


def test_every_command_parses() -> None:
    parser = build_parser()
    for argv in (["run", "m.yaml", "--simulate", "--dry-run"], ["status", "m.yaml"], ["report", "m.yaml"]):
        assert parser.parse_args(argv).command == argv[0]
    sim = parser.parse_args(["simulate", "--port", "0", "--rate-limit", "5", "--jitter", "5"])
    assert (sim.port, sim.rate_limit) == (0, 5)
    deliver = parser.parse_args(["deliver", "m.yaml", "--to", "d", "--all"])
    assert deliver.all


def test_models_lists_the_shipped_schemas_and_shows_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in listed.splitlines()[1:]}
    assert rows["model_elevenlabs-sound-effects-v2"] == "effects" and rows["model_elevenlabs-tts-v3"] == "speech"
    assert rows["model_meta-musicgen"] == "music" and len(rows) >= 10
    assert main(["models", "show", "model_meta-musicgen"]) == 0
    shown = capsys.readouterr().out
    assert "duration" in shown and "1..30" in shown and "stereo-melody-large" in shown
    assert main(["models", "show", "model_nope"]) == 2
    assert "model_nope" in capsys.readouterr().err


def test_a_live_schema_is_cached_for_a_day_and_a_bad_cache_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import time

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BATCHGEN_SIMULATE_JOB_TIME", "0.05")
    assert main(["models", "show", "model_lyria-2", "--simulate"]) == 0
    assert "(music, live schema)" in capsys.readouterr().out
    kept = tmp_path / "cache" / "batchgen" / "models" / "model_lyria-2.json"
    assert json.loads(kept.read_text())["model"]["id"] == "model_lyria-2"
    assert main(["models", "show", "model_lyria-2"]) == 0
    assert "live schema, fetched" in capsys.readouterr().out
    assert main(["models"]) == 0
    rows = {line.split()[0]: line.split()[1:4] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["model_lyria-2"] == ["music", "3", "live"] and rows["model_meta-musicgen"][2] == "shipped"
    stale = json.loads(kept.read_text())
    stale["fetched"] = time.time() - 2 * 86400
    kept.write_text(json.dumps(stale))
    assert main(["models", "show", "model_lyria-2"]) == 0
    assert "shipped schema" in capsys.readouterr().out  # a day old: the shipped one again
    kept.write_text('{"fetched": 1e99, "model": {"id": "model_lyria-2"')
    assert main(["models", "show", "model_lyria-2"]) == 0
    assert "shipped schema" in capsys.readouterr().out
    assert main(["models", "show", "model_unknown-thing", "--simulate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "404" in err


def test_a_signals_interrupt_that_python_cannot_raise_is_not_printed_as_a_traceback() -> None:
    """A KeyboardInterrupt raised in a weakref callback (a signal landing mid-import) goes to
    sys.unraisablehook: while its signal is marked, main's hook drops it quietly; anything
    else still reaches the default hook."""
    import signal
    import weakref
    from types import SimpleNamespace

    from batchgen.cli.app import _quiet_interrupt
    from batchgen.core import interrupts

    seen: list[object] = []
    hook = _quiet_interrupt(seen.append)
    interrupts.mark(signal.SIGTERM)
    try:
        dropped = SimpleNamespace(exc_value=KeyboardInterrupt())
        hook(dropped)
        assert seen == []
        other = SimpleNamespace(exc_value=ValueError("a real problem"))
        hook(other)
        assert seen == [other]
    finally:
        interrupts.clear()
    unmarked = SimpleNamespace(exc_value=KeyboardInterrupt())
    hook(unmarked)  # no signal marked: not ours to hide
    assert seen[-1] is unmarked

    class Thing:
        pass

    def callback(_: object) -> None:
        raise KeyboardInterrupt

    import sys

    before = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        interrupts.mark(signal.SIGINT)
        thing = Thing()
        ref = weakref.ref(thing, callback)
        count = len(seen)
        del thing  # the callback raises; Python hands the KeyboardInterrupt to the hook, which drops it
        assert ref() is None and len(seen) == count
    finally:
        sys.unraisablehook = before
        interrupts.clear()

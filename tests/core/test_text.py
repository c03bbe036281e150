"""Broken Unicode wherever text enters: a lone surrogate from JSON or YAML never reaches a write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen import load
from batchgen.core.text import REPLACEMENT, clean, loads
from batchgen.listen.deliver import Options, deliver
from batchgen.listen.picks import load as load_picks

from ..conftest import Served
from ..helpers import env_for, fast, run, run_cli


def test_clean_replaces_lone_surrogates_and_joins_pairs() -> None:
    """A lone surrogate becomes U+FFFD, a pair the character it spells, in keys and values alike."""
    assert clean("a\ud800b") == f"a{REPLACEMENT}b" and clean("\ud83d\ude00") == "😀"
    assert loads(b'{"k\\udc00": ["\\ud800", 1, {"x": "\\ud83d\\ude00"}]}') == {
        f"k{REPLACEMENT}": [REPLACEMENT, 1, {"x": "😀"}]
    }
    assert loads('["plain", "caf\\u00e9"]') == ["plain", "café"]


@pytest.mark.parametrize("where", ["yaml", "jsonl"])
def test_a_manifest_or_tracks_file_with_a_lone_surrogate_validates(tmp_path: Path, where: str) -> None:
    """A JSONL line's "\\ud800" gives a prompt with U+FFFD (exit 0); YAML's escape is cleaned the same,
    or refused in one line naming the line where libyaml reads it: never a traceback."""
    body = "batch: odd\nseed: 1\ndefaults: {duration: 1}\n"
    if where == "yaml":
        body += 'tracks:\n  - {name: a, prompt: "bad \\ud800 text"}\n'
    else:
        (tmp_path / "lines.jsonl").write_text('{"name": "a", "prompt": "bad \\ud800 text"}\n')
        body += "tracks_file: lines.jsonl\n"
    (tmp_path / "m.yaml").write_text(body)
    for command in ("validate", "plan", "status"):
        args = [command, str(tmp_path / "m.yaml")] + (["--out", str(tmp_path / "out")] if command != "validate" else [])
        result = run_cli(args, env_for(None))
        assert "Traceback" not in result.stderr, result.stderr
        refused = result.returncode == 2 and result.stderr.count("\n") == 1 and "m.yaml:5:" in result.stderr
        assert result.returncode == 0 or (where == "yaml" and refused), result.stderr


async def test_a_prompt_and_a_note_with_lone_surrogates_run_and_deliver(served: Served, tmp_path: Path) -> None:
    """A JSONL prompt and a picks.json note holding "\\ud800" are cleaned as read: the take is made
    and done (its sidecar written), and the page, status and deliver work and write valid UTF-8."""
    manifest = tmp_path / "m.yaml"
    (tmp_path / "lines.jsonl").write_text('{"name": "a", "prompt": "calm \\ud800"}\n')
    manifest.write_text("batch: odd\nseed: 1\ndefaults: {duration: 2}\ntracks_file: lines.jsonl\n")
    result = await run(served, manifest, fast(tmp_path / "out"))
    assert result.done == 1 and not result.failed, result.failed
    folder = tmp_path / "out" / "odd"
    assert json.loads((folder / "a.json").read_bytes().decode("utf-8"))["prompt"] == f"calm {REPLACEMENT}"
    (folder / "picks.json").write_text(
        '{"batch": "odd", "version": 1, "takes": {"a": {"track": "a", "state": "picked", "note": "x\\ud800"}}}'
    )
    assert load_picks(folder, "odd").marks["a"].note == f"x{REPLACEMENT}"
    page = run_cli(["report", str(manifest), "--out", str(tmp_path / "out")], env_for(None))
    assert page.returncode == 0 and "Traceback" not in page.stderr, page.stderr
    (folder / "index.html").read_bytes().decode("utf-8")
    outcome = deliver(load(manifest), tmp_path / "out", Options(tmp_path / "to", select="all"), lambda _: None)
    assert outcome.written == ["a.wav"] and not outcome.problems
    record = json.loads((tmp_path / "to" / "delivery.json").read_bytes().decode("utf-8"))
    assert record["files"][0]["prompt"] == f"calm {REPLACEMENT}"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SCENARIO_API_KEY", "key\udcff", "API key in the environment holds characters"),
        ("SCENARIO_PROJECT_ID", "proj\udcff", "SCENARIO_PROJECT_ID holds characters"),
        ("SCENARIO_BASE_URL", "http://h\udcff/v1", "SCENARIO_BASE_URL is not a valid URL"),
    ],
    ids=["key", "project", "base URL"],
)
def test_environment_bytes_that_are_not_utf8_are_one_line(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    """An environment variable holding bytes that are not UTF-8 is refused in one line, exit 2."""
    (tmp_path / "m.yaml").write_text("batch: b\nseed: 1\ntracks:\n  - {name: a, prompt: p}\n")
    env = {**env_for(None, SCENARIO_API_KEY="k", SCENARIO_API_SECRET="s"), variable: value}
    result = run_cli(["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out")], env)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_manifest_path_with_broken_unicode_is_named_not_a_crash(tmp_path: Path) -> None:
    """A path argument with bytes that are not UTF-8 is shown escaped in the one-line error."""
    result = run_cli(["validate", str(tmp_path / "m\udcff.yaml")], env_for(None))
    assert result.returncode == 2 and "\\udcff" in result.stderr and "Traceback" not in result.stderr, result.stderr

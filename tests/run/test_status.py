"""`status`, `plan` and `report` read a batch through the same ledger as `run`, so they agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen.cli import main

MANIFEST = """\
batch: agree
seed: 4
defaults: {duration: 1, modelVersion: melody-large}
tracks:
  - {name: calm, prompt: "calm forest"}
  - {name: storm, prompt: "storm at sea"}
  - {name: town, prompt: "town square"}
"""


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """A finished three-task batch made by `run --simulate`."""
    monkeypatch.setenv("BATCHGEN_SIMULATE_JOB_TIME", "0.05")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--simulate", "-q", "--rate", "50", "--poll-interval", "0.02"]
    assert main([*args, "--no-report"]) == 0
    yield manifest, out


def status(manifest: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    capsys.readouterr()
    assert main(["status", str(manifest), "--out", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def plan(manifest: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    capsys.readouterr()
    assert main(["plan", str(manifest), "--out", str(out), "--json"]) == 0
    return {row["name"]: row["status"] for row in map(json.loads, capsys.readouterr().out.splitlines())}


def test_an_edited_prompt_is_changed_in_status_and_plan(
    batch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """After editing a done track's prompt both say it is changed and left to generate."""
    manifest, out = batch
    manifest.write_text(MANIFEST.replace("storm at sea", "storm over the hills"))
    assert status(manifest, out, capsys)["counts"] == {"changed": 1, "done": 2}
    assert plan(manifest, out, capsys) == {"calm": "done", "storm": "changed", "town": "done"}
    capsys.readouterr()
    main(["status", str(manifest), "--out", str(out)])
    assert "for the 1 task(s) left" in capsys.readouterr().out


def test_a_track_made_again_is_not_called_a_paid_failure(
    batch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Regenerating an edited track pays for new jobs; the old ones succeeded, so the summary
    says nothing of jobs that failed without a refund."""
    manifest, out = batch
    manifest.write_text(MANIFEST.replace("storm at sea", "storm over the hills"))
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                str(manifest),
                "--out",
                str(out),
                "--simulate",
                "--rate",
                "50",
                "--poll-interval",
                "0.02",
                "--no-report",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert "1 new" in said and "failed without a refund" not in said, said


def test_a_deleted_file_is_missing_in_status_and_plan(
    batch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A done task whose file was deleted is `missing` (the next run makes it again), not `done`."""
    manifest, out = batch
    (out / "agree" / "town.wav").unlink()
    shown = status(manifest, out, capsys)
    assert shown["counts"] == {"done": 2, "missing": 1}
    assert plan(manifest, out, capsys)["town"] == "missing"
    # Fetched again from its asset: nothing to pay, so nothing priced or estimated.
    assert shown["cu"]["remaining_estimate"] == 0 and shown["cu"]["unpriced"] == 0
    capsys.readouterr()
    assert main(["plan", str(manifest), "--out", str(out), "--cost", "--simulate", "--json"]) == 0
    priced = json.loads(capsys.readouterr().out)
    assert priced["tasks"] == 0 and priced["total"] == 0 and priced["dry_runs"] == 0


def test_duplicated_journal_lines_do_not_double_the_spending(
    batch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal appended to itself (a bad restore) still says what was spent, once."""
    manifest, out = batch
    before = status(manifest, out, capsys)
    journal = out / "agree" / ".batchgen" / "state.jsonl"
    journal.write_bytes(journal.read_bytes() * 2)
    after = status(manifest, out, capsys)
    assert after == before and before["cu"]["spent"] == 3


def test_removing_a_done_track_counts_nothing_negative(
    batch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A track removed from the manifest is no longer counted; the journal's extra task is named."""
    manifest, out = batch
    manifest.write_text(MANIFEST.replace('  - {name: town, prompt: "town square"}\n', ""))
    assert status(manifest, out, capsys)["counts"] == {"done": 2}
    capsys.readouterr()
    main(["status", str(manifest), "--out", str(out)])
    text = capsys.readouterr().out
    assert "-1" not in text and "for the 0 task(s) left" in text and "no longer in the manifest" in text


@pytest.mark.parametrize("command", ["status", "plan", "report"])
def test_a_journal_of_another_batch_is_refused_everywhere(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `run` refuses, `status`, `plan` and `report` refuse too: one line, exit 2."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    journal = tmp_path / "out" / "agree" / ".batchgen" / "state.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"ev":"batch","v":1,"batch":"someone-else"}\n')
    assert main([command, str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "someone-else" in err and len(err.strip().splitlines()) == 1


def test_compact_keeps_what_status_plan_and_the_next_run_say(
    batch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`batchgen compact` rewrites the journal as one line per task: status and plan say what
    they said, the next run pays for nothing, and an edited track is still known as changed."""
    manifest, out = batch
    journal = out / "agree" / ".batchgen" / "state.jsonl"
    (out / "agree" / ".batchgen" / "finished.json").unlink(missing_ok=True)  # read the journal itself
    before, rows = status(manifest, out, capsys), plan(manifest, out, capsys)
    assert main(["compact", str(manifest), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("agree: journal compacted: ") and "lines to 4" in said
    assert len(journal.read_bytes().splitlines()) == 4  # the header and one line per task
    (out / "agree" / ".batchgen" / "finished.json").unlink(missing_ok=True)
    assert status(manifest, out, capsys) == before and plan(manifest, out, capsys) == rows
    assert main(["run", str(manifest), "--out", str(out), "--simulate", "-q", "--no-report"]) == 0
    assert "3/3 done (0 new, 3 already done), 0 failed, 0 CU spent (3 in all)" in capsys.readouterr().out
    manifest.write_text(MANIFEST.replace("storm at sea", "storm over the hills"))
    assert plan(manifest, out, capsys) == {"calm": "done", "storm": "changed", "town": "done"}


def test_compact_waits_for_no_run_and_needs_a_journal(
    tmp_path: Path, batch: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch a run holds is not compacted under its feet; a batch never run has nothing to compact."""
    from batchgen.store.lock import BatchLock

    manifest, out = batch
    with BatchLock(out / "agree" / ".batchgen" / "lock"):
        assert main(["compact", str(manifest), "--out", str(out)]) != 0
    assert "agree" in capsys.readouterr().err
    assert main(["compact", str(manifest), "--out", str(tmp_path / "elsewhere")]) == 0
    assert "nothing to compact" in capsys.readouterr().out

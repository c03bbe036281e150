"""A finished batch remembered: status and run answer at once, exactly as their whole work would,
and only while the manifest, its inputs, the journal and the folder are all as they were."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from batchgen import expand, load
from batchgen.cli import main
from batchgen.store import finished
from batchgen.store.layout import Layout
from batchgen.store.ledger import Ledger

from ..conftest import Served
from ..helpers import fast, run

MANIFEST = """\
batch: tick
seed: 5
defaults: {duration: 2}
tracks_file: rows.csv
"""


async def finished_batch(served: Served, tmp_path: Path) -> tuple[Path, Path]:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    (tmp_path / "rows.csv").write_text("name,prompt\na,calm forest\nb,busy market\n")
    await run(served, manifest, fast(tmp_path / "out"))
    return manifest, tmp_path / "out"


def command(manifest: Path, out: Path, capsys: pytest.CaptureFixture[str], name: str, *extra: str) -> str:
    assert main([name, str(manifest), "--out", str(out), *extra]) == 0
    return capsys.readouterr().out


def status(manifest: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    return command(manifest, out, capsys, "status", *extra)


def no_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the journal was replayed")

    monkeypatch.setattr(Ledger, "read", classmethod(refuse))


async def test_status_of_a_finished_batch_answers_without_replaying_and_says_the_same(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest, out = await finished_batch(served, tmp_path)
    capsys.readouterr()
    record = Layout(out / "tick").finished
    plans = [command(manifest, out, capsys, "plan", *extra) for extra in ((), ("--json",))]  # before any record
    text = status(manifest, out, capsys)  # computed in whole, then recorded
    assert record.exists()
    record.unlink()
    whole = text, status(manifest, out, capsys, "--json")
    with monkeypatch.context() as patched:
        no_replay(patched)
        quick = status(manifest, out, capsys), status(manifest, out, capsys, "--json")
        quick_plans = [command(manifest, out, capsys, "plan", *extra) for extra in ((), ("--json",))]
        assert main(["run", str(manifest), "--out", str(out), "--simulate", "-q"]) == 0
    assert quick == whole and quick_plans == plans
    assert plans[0].splitlines()[-1] == "2 tasks: 2 done"
    assert json.loads(quick[1])["counts"] == {"done": 2}
    said = capsys.readouterr().out
    assert said.startswith("batch tick: 2/2 done (0 new, 2 already done), 0 failed, 0 CU spent (")


@pytest.mark.parametrize(
    "change",
    [
        "manifest",
        "tracks file",
        "journal",
        "journal, same length",
        "compacted",
        "a take's file",
        "another file",
        "version",
    ],
)
async def test_anything_changed_and_the_whole_work_is_done_again(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    manifest, out = await finished_batch(served, tmp_path)
    status(manifest, out, capsys)
    folder = out / "tick"
    assert finished.check(manifest, out) is not None
    if change == "manifest":
        manifest.write_text(MANIFEST + "# edited\n")
    elif change == "tracks file":
        (tmp_path / "rows.csv").write_text("name,prompt\na,calm forest\nb,busy market\nc,new one\n")
    elif change == "journal":
        with Layout(folder).journal.open("a") as fh:
            fh.write("\n")
    elif change == "journal, same length":  # two lines swapped: the same story, other bytes
        lines = Layout(folder).journal.read_bytes().splitlines(keepends=True)
        lines[1], lines[2] = lines[2], lines[1]
        Layout(folder).journal.write_bytes(b"".join(lines))
    elif change == "compacted":
        assert main(["compact", str(manifest), "--out", str(out)]) == 0
    elif change == "a take's file":
        (folder / "a.wav").unlink()
    elif change == "another file":
        (folder / "notes.txt").write_text("x")
    else:
        record = json.loads(Layout(folder).finished.read_text())
        Layout(folder).finished.write_text(json.dumps({**record, "version": "0.0.1"}))
    assert finished.check(manifest, out) is None
    said = status(manifest, out, capsys)
    if change == "a take's file":
        assert "1 missing" in said
    if change == "tracks file":
        assert "1 new" in said


@pytest.mark.parametrize("damage", ["not json", "a list", "wrong types", "a symlink"])
async def test_a_damaged_record_is_ignored_never_trusted(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    manifest, out = await finished_batch(served, tmp_path)
    status(manifest, out, capsys)
    path = Layout(out / "tick").finished
    record = json.loads(path.read_text())
    if damage == "not json":
        path.write_bytes(b"{\xff")
    elif damage == "a list":
        path.write_text("[]")
    elif damage == "wrong types":
        path.write_text(json.dumps({**record, "tasks": "many", "inputs": [1]}))
    else:
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text(json.dumps(record))
        path.unlink()
        path.symlink_to(elsewhere)
    assert finished.check(manifest, out) is None
    assert "2 tasks: 2 done" in status(manifest, out, capsys)


async def test_a_batch_not_finished_is_never_recorded(served: Served, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    (tmp_path / "rows.csv").write_text("name,prompt\na,calm forest\n")
    await run(served, manifest, fast(tmp_path / "out"))
    (tmp_path / "rows.csv").write_text("name,prompt\na,calm forest\nb,not made yet\n")
    assert await asyncio.to_thread(main, ["status", str(manifest), "--out", str(tmp_path / "out")]) == 0
    assert not Layout(tmp_path / "out" / "tick").finished.exists()
    assert len(load(manifest).tracks) == 2


CHAINED = """\
batch: tick
seed: 5
chain: {context: 2}
defaults: {duration: 5}
tracks:
  - {name: long, prompt: "a slow theme", length: 12}
  - {name: short, prompt: "a sting"}
"""


async def test_a_finished_batch_with_chains_answers_its_hops_as_computed(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CHAINED)
    served.sim.job_time = 0.05
    await run(served, manifest, fast(tmp_path / "out"))
    out = tmp_path / "out"
    capsys.readouterr()
    record = Layout(out / "tick").finished
    whole = [command(manifest, out, capsys, name, *extra) for name in ("plan", "status") for extra in ((), ("--json",))]
    assert record.exists()
    record.unlink()
    command(manifest, out, capsys, "status")  # recorded again, from the whole work
    quick = [command(manifest, out, capsys, name, *extra) for name in ("plan", "status") for extra in ((), ("--json",))]
    assert quick == whole
    hops = next(t.hop_count for t in expand(load(manifest), 1) if t.name == "long")
    assert hops > 1 and f"hops of chained tracks: {hops}/{hops} made" in whole[2]
    first = json.loads(whole[1].splitlines()[0])
    assert first["name"] == "long" and first["hop"] == first["hops"] == hops

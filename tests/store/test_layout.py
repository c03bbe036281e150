"""The batch folder's layout: the names `docs/design.md` promises are the ones batchgen uses."""

from __future__ import annotations

from pathlib import Path

from batchgen.store.journal import journal_path
from batchgen.store.layout import Layout

DESIGN = Path(__file__).resolve().parent.parent.parent / "docs" / "design.md"


def test_every_path_is_inside_the_batch_folder_and_documented(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "b")
    on_disk = DESIGN.read_text().split("## On disk", 1)[1]
    paths = [layout.journal, layout.lock, layout.prices, layout.picks, layout.picks_lock, layout.page]
    paths += [layout.hops, layout.audio("t"), layout.sidecar("t"), layout.models, layout.finished]
    for path in paths:
        name = str(path.relative_to(layout.folder)).replace("t.", "<name>.")
        assert f"  {name} " in on_disk or f"  {name}/ " in on_disk, name
    assert f"`{layout.hop('<name>', 0).name.replace('h1', 'h<k>')}.wav`" in on_disk
    assert len(set(paths)) == len(paths)


def test_hops_are_numbered_from_one_and_the_journal_is_where_the_ledger_reads(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.hop("boss", 0).name == "boss.h1" and layout.hop("boss", 6).parent == layout.hops
    assert journal_path(tmp_path) == layout.journal

"""The manifests the README and docs/ show are valid: a promise on the page stays true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from batchgen import expand, load

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (page, block)
    for page in PAGES
    for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)
    if "batch:" in block and "tracks" in block
]


@pytest.mark.parametrize(("page", "block"), BLOCKS, ids=[f"{p.name}-{i}" for i, (p, _) in enumerate(BLOCKS)])
def test_a_manifest_shown_in_the_docs_validates(tmp_path: Path, page: Path, block: str) -> None:
    """Files a shown manifest names (a CSV, a melody) are made for it: their contents are not the point."""
    (tmp_path / "melodies").mkdir()
    (tmp_path / "melodies" / "theme.wav").write_bytes((ROOT / "manifests" / "melodies" / "theme.wav").read_bytes())
    for name in re.findall(r"tracks_file: ([\w.-]+)", block):
        (tmp_path / name).write_text("name,prompt\nextra,an extra track\n")
    path = tmp_path / "m.yaml"
    path.write_text(block)
    assert expand(load(path), 1)

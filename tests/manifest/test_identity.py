"""Task identity never moves: every example manifest expands to the names, digests and seeds 0.2.0 gave.

A digest or derived seed that changed would make every batch made before look `changed`
and be paid for again. `tests/fixtures/identities-0.2.0.json` was written by 0.2.0 itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.manifest import expand, load

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = json.loads((ROOT / "tests" / "fixtures" / "identities-0.2.0.json").read_text())["manifests"]


@pytest.mark.parametrize("manifest", sorted(GOLDEN))
def test_names_digests_and_seeds_are_those_0_2_0_gave(manifest: str) -> None:
    parsed = load(ROOT / "manifests" / manifest)
    tasks = expand(parsed, parsed.seed if parsed.seed is not None else 1)
    assert [{"name": t.name, "digest": t.digest, "seed": t.seed} for t in tasks] == GOLDEN[manifest]

"""The collector paused around bulk construction, and settled once the command starts."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from batchgen.core.gcpause import YOUNG_THRESHOLD, paused_gc, settle


@pytest.fixture
def collector() -> Iterator[None]:
    enabled, threshold = gc.isenabled(), gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable() if enabled else gc.disable()


def test_paused_gc_restores_what_it_found(collector: None) -> None:
    """Off inside the block, as it was after it: on stays on, off stays off."""
    gc.enable()
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with paused_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_settle_turns_the_collector_on_only_when_the_command_line_turned_it_off(collector: None) -> None:
    """Off (the CLI's start): on, with the higher young threshold and startup's objects frozen. On: untouched."""
    gc.enable()
    gc.set_threshold(700)
    settle()
    assert gc.get_threshold()[0] == 700 and gc.get_freeze_count() == 0
    gc.disable()
    settle()
    assert gc.isenabled() and gc.get_threshold()[0] == YOUNG_THRESHOLD and gc.get_freeze_count() > 0

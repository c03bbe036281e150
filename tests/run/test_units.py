"""Small rules of a run: how it exits, how many workers it starts, how a stop ends a phase."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batchgen.run.config import RunConfig
from batchgen.run.result import RunResult
from batchgen.run.stopping import Interrupted, Stop


@pytest.mark.parametrize(
    ("result", "code"),
    [
        (RunResult(done=3), 0),
        (RunResult(failed={"a": "job failed"}), 1),
        (RunResult(left_for_budget=2), 1),
        (RunResult(left_for_wait=4, held_off="come back tomorrow"), 1),
        (RunResult(interrupted=True, failed={"a": "x"}), 130),
    ],
    ids=["all done", "a failure", "left for --max-cost", "held off", "stopped"],
)
def test_a_run_exits_as_cron_expects(result: RunResult, code: int) -> None:
    """0 all done, 1 anything failed or left for the next run, 130 a stop (whatever else happened)."""
    assert result.exit_code == code


def test_workers_follow_the_rate_and_the_cap() -> None:
    """Submit workers: enough for the rate, at most the cap and 32; downloaders: the cap, 4 to 32."""
    assert RunConfig(rate=2, max_in_flight=8).submit_workers == 5
    assert RunConfig(rate=100, max_in_flight=8).submit_workers == 8
    assert RunConfig(rate=100, max_in_flight=200).submit_workers == 32
    assert RunConfig(workers=3).submit_workers == 3
    assert RunConfig(max_in_flight=1).downloaders == 4 and RunConfig(max_in_flight=500).downloaders == 32


async def test_a_signal_ends_a_phase_at_once_or_after_the_grace_period() -> None:
    """Before anything is owed, a signal cancels the phase at once; a graceful phase gets the grace period."""
    stop = Stop(grace=0.2)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, stop.signal)
    started = loop.time()
    with pytest.raises(Interrupted):
        await stop.run(asyncio.sleep(10))
    assert loop.time() - started < 1
    graceful = Stop(grace=0.2)
    loop.call_later(0.05, graceful.signal)
    started = loop.time()
    with pytest.raises(Interrupted):
        await graceful.run(asyncio.sleep(10), graceful=True)
    assert 0.2 <= loop.time() - started < 2
    with pytest.raises(Interrupted):  # once stopped, a later phase does not start
        await graceful.run(asyncio.sleep(10))


def test_the_halt_state_only_moves_to_a_graver_reason() -> None:
    """Held off < signal < disk error: what a run still finishes follows the gravest reason seen."""
    from batchgen.run.halt import Halt

    assert max(Halt.HELD_OFF, Halt.SIGNAL) is Halt.SIGNAL and max(Halt.DISK, Halt.SIGNAL) is Halt.DISK
    assert Halt.HELD_OFF.leaving and not Halt.HELD_OFF.stopping
    assert Halt.SIGNAL.stopping and Halt.DISK.stopping and not Halt.RUNNING.stopping
    assert not Halt.SIGNAL.leaving


async def test_a_signal_whose_exception_was_dropped_still_stops_the_run() -> None:
    """A handler's KeyboardInterrupt can land where Python only prints it (an import's lock
    clean-up); the mark it left makes the run's own handling stop at once all the same."""
    from batchgen.core import interrupts

    stop = Stop(grace=5)
    interrupts.mark(2)
    try:
        with stop.signals():
            assert stop.requested
            with pytest.raises(Interrupted):
                await stop.run(asyncio.sleep(10))
    finally:
        interrupts.clear()
    fresh = Stop(grace=5)
    with fresh.signals():
        assert not fresh.requested


def test_a_command_that_finished_after_a_dropped_signal_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal marked during a command (its exception lost) makes the command exit 130; the
    mark is the command's own: the next command starts unsignalled."""
    from batchgen.cli import plan
    from batchgen.cli.app import main
    from batchgen.core import interrupts

    path = tmp_path / "m.yaml"
    path.write_text("batch: b\ntracks:\n  - {name: a, prompt: p}\n")
    load = plan.load

    def load_then_signalled(where: str) -> object:
        interrupts.mark(15)  # as the handler does, before its KeyboardInterrupt went missing
        return load(where)

    monkeypatch.setattr(plan, "load", load_then_signalled)
    assert main(["validate", str(path)]) == 130
    monkeypatch.setattr(plan, "load", load)
    assert main(["validate", str(path)]) == 0

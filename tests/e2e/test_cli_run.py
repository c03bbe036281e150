"""`batchgen run` as users run it: a subprocess against a simulator that outlives it.

SIGKILL at the moments that matter (after the intent, after the job id, mid-download),
SIGTERM, the lock, credentials, and the Quickstart demo.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchgen.simulator import Faults, Simulator, SimulatorThread
from batchgen.store.lock import BatchLock

from ..conftest import KEY, SECRET
from ..helpers import check_invariants, count, env_for, journal_events, run_cli, start, wait_for

pytestmark = pytest.mark.e2e  # every test here runs batchgen as a subprocess

MANIFEST = """\
batch: nightly
seed: 5
defaults: {duration: 3}
tracks:
  - {name: a, prompt: "calm forest, 70 bpm", takes: 2}
  - {name: b, prompt: "battle drums, 140 bpm"}
  - {name: c, prompt: "market lute, 110 bpm"}
  - {name: d, prompt: "cave drones, 60 bpm"}
"""
TASKS = 5


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(Simulator(key=KEY, secret=SECRET, job_time=0.3, faults=Faults(seed=2))) as thread:
        yield thread


def kill_and_resume(sim: SimulatorThread, tmp_path: Path, moment: Callable[[Path], bool], **env: str) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    folder = out / "nightly"
    args = ["run", str(manifest), "--out", str(out), "--rate", "20", "--poll-interval", "0.05"]
    proc = start(args, env_for(sim, **env))
    try:
        wait_for(lambda: moment(folder) or proc.poll() is not None)
        assert proc.poll() is None, "the run ended before the kill point"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    sim.sim.faults.submit_delay = 0
    sim.sim.faults.bandwidth = None
    resumed = run_cli(args, env_for(sim))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_invariants(sim.sim, folder, TASKS)


def test_kill_after_intent_before_job_id_adopts_the_job(sim: SimulatorThread, tmp_path: Path) -> None:
    """SIGKILL between POST and journaled job id: the resume finds the job on the server, pays once."""
    sim.sim.faults.submit_delay = 3.0  # jobs exist, their POSTs are not answered yet

    def window(folder: Path) -> bool:
        return len(sim.sim.jobs) >= 2 and count(folder, "submitted") == 0

    kill_and_resume(sim, tmp_path, window)
    adopted = [e for e in journal_events(tmp_path / "out" / "nightly") if e.get("adopted")]
    assert len(adopted) >= 2


def test_kill_after_job_ids_polls_instead_of_resubmitting(sim: SimulatorThread, tmp_path: Path) -> None:
    """SIGKILL with jobs journaled but unfinished: the resume polls them, submits nothing twice."""
    sim.sim.job_time = 2.0
    kill_and_resume(sim, tmp_path, lambda folder: count(folder, "submitted") >= 3)


def test_kill_mid_download_leaves_no_partial_file(sim: SimulatorThread, tmp_path: Path) -> None:
    """SIGKILL while a file streams: only a .part exists; the resume downloads it again."""
    sim.sim.faults.bandwidth = 200_000  # a 3 s stereo WAV takes about a second

    def downloading(folder: Path) -> bool:
        return any(folder.glob("*.part")) if folder.exists() else False

    kill_and_resume(sim, tmp_path, downloading)


def test_sigterm_stops_gracefully_then_resume_completes(sim: SimulatorThread, tmp_path: Path) -> None:
    """SIGTERM: exit 130 within seconds, journal consistent; the rerun finishes without duplicates."""
    sim.sim.job_time = 1.5
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--rate", "2", "--poll-interval", "0.05"]
    proc = start(args, env_for(sim))
    wait_for(lambda: count(out / "nightly", "submitted") >= 1)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stdout + stderr
    assert time.monotonic() - t0 < 8
    assert "resume" in stdout and "Traceback" not in stderr
    status = json.loads(run_cli(["status", str(manifest), "--out", str(out), "--json"], env_for(None)).stdout)
    assert status["counts"].get("submitting", 0) == 0  # every POST sent was answered and journaled
    resumed = run_cli(args, env_for(sim))
    assert resumed.returncode == 0, resumed.stderr
    check_invariants(sim.sim, out / "nightly", TASKS)


def test_second_run_is_locked_out(sim: SimulatorThread, tmp_path: Path) -> None:
    """While a run holds the batch lock, another exits 3 naming the holder; a stale lock file does not block."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    with BatchLock(out / "nightly" / ".batchgen" / "lock"):
        blocked = run_cli(["run", str(manifest), "--out", str(out)], env_for(sim))
        # Told before the manifest is read: a broken track is the next run's news, not this tick's.
        manifest.write_text(MANIFEST + "  - {name: broken, prompt: p, temperature: hot}\n")
        early = run_cli(["run", str(manifest), "--out", str(out)], env_for(sim))
        manifest.write_text(MANIFEST)
    assert blocked.returncode == early.returncode == 3
    assert f"pid {os.getpid()}" in blocked.stderr and f"pid {os.getpid()}" in early.stderr
    assert (out / "nightly" / ".batchgen" / "lock").exists()
    done = run_cli(["run", str(manifest), "--out", str(out), "--rate", "20", "--poll-interval", "0.05"], env_for(sim))
    assert done.returncode == 0, done.stderr


def test_secrets_never_written(sim: SimulatorThread, tmp_path: Path) -> None:
    """Neither the secret nor the auth header shows in stdout, stderr, journal or sidecars, even on failures."""
    sim.sim.faults.refuse_prompts = ("drums",)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    for fmt in ("text", "json"):
        result = run_cli(
            ["run", str(manifest), "--out", str(out), "--rate", "20", "--poll-interval", "0.05", "--log-format", fmt],
            env_for(sim),
        )
        assert result.returncode == 1 and "moderation" in result.stdout
        texts = [result.stdout, result.stderr]
        texts += [p.read_text() for p in (out / "nightly").rglob("*") if p.is_file() and p.suffix != ".wav"]
        token = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
        for text in texts:
            assert SECRET not in text and token not in text


def test_missing_credentials_exit_2(tmp_path: Path) -> None:
    """Without credentials (and without --simulate) the run refuses with exit 2 and writes nothing."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    result = run_cli(["run", str(manifest), "--out", str(tmp_path / "out")], env_for(None))
    assert result.returncode == 2 and "SCENARIO_API_KEY" in result.stderr
    assert not (tmp_path / "out").exists()


def test_quickstart_demo_on_the_builtin_simulator(tmp_path: Path) -> None:
    """The README's first command: the demo manifest on --simulate leaves real WAVs and exits 0."""
    result = run_cli(
        ["run", "manifests/demo.yaml", "--simulate", "--out", str(tmp_path), "--rate", "10", "--poll-interval", "0.05"],
        env_for(None, BATCHGEN_SIMULATE_JOB_TIME="0.2"),
    )
    assert result.returncode == 0, result.stderr
    wavs = sorted(p.name for p in (tmp_path / "demo").glob("*.wav"))
    assert len(wavs) == 7 and "boss-battle-t3.wav" in wavs
    assert "7/7 done" in result.stdout


def test_log_formats_for_cron(sim: SimulatorThread, tmp_path: Path) -> None:
    """--log-format json writes one JSON object per stderr line; -q keeps stderr empty on success."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    base = ["run", str(manifest), "--rate", "20", "--poll-interval", "0.05"]
    logged = run_cli([*base, "--out", str(tmp_path / "a"), "--log-format", "json"], env_for(sim))
    assert logged.returncode == 0, logged.stderr
    events = [json.loads(line) for line in logged.stderr.splitlines()]
    assert sum(1 for e in events if e["ev"] == "done") == TASKS
    assert any(e["ev"] == "progress" and e["done"] == TASKS for e in events)
    quiet = run_cli([*base, "--out", str(tmp_path / "b"), "-q"], env_for(sim))
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert f"{TASKS}/{TASKS} done" in quiet.stdout


def test_dry_run_prints_the_plan_and_submits_nothing(sim: SimulatorThread, tmp_path: Path) -> None:
    """run --dry-run lists every task as the plan does, exits 0 and sends nothing."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    result = run_cli(["run", str(manifest), "--out", str(tmp_path / "out"), "--dry-run"], env_for(sim))
    assert result.returncode == 0, result.stderr
    assert "a-t1" in result.stdout and f"{TASKS} tasks: {TASKS} new" in result.stdout
    assert "nothing submitted" in result.stdout
    assert sim.stats()["jobs"] == [] and not (tmp_path / "out").exists()

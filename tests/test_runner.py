"""The runner end to end against the simulator: in-process for speed, with real sockets."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from batchgen import load
from batchgen.client import Credentials, ScenarioClient
from batchgen.ledger import Ledger
from batchgen.progress import Reporter
from batchgen.runner import RunConfig, Runner
from batchgen.simulator import Faults
from batchgen.simulator.audio import render
from batchgen.state import Status

from .conftest import KEY, SECRET, Served

MANIFEST = """\
batch: e2e
seed: 11
defaults: {duration: 1}
tracks:
  - {name: calm, prompt: "calm forest, 70 bpm", takes: 2}
  - {name: battle, prompt: "epic battle, 140 bpm", modelVersion: melody-large}
  - {name: market, prompt: "village market, 110 bpm"}
sweep:
  temperature: [0.9, 1.1]
"""


def fast(out: Path, **kw: object) -> RunConfig:
    base: dict[str, object] = dict(out=out, rate=50, max_in_flight=8, poll_interval=0.02, poll_max=0.05, grace=1)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


async def run(served: Served, manifest: Path, config: RunConfig) -> object:
    async with ScenarioClient(served.url, Credentials(KEY, SECRET)) as client:
        return await Runner(load(manifest), client, config, Reporter(quiet=True)).run()


def jobs_per_task(stats: dict) -> Counter[tuple[str, int, float]]:
    return Counter(
        (j["params"]["prompt"], j["params"]["seed"], j["params"].get("temperature", 1))
        for j in stats["jobs"]
        if j["kind"] == "generate"
    )


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(MANIFEST)
    return path


async def test_end_to_end(served: Served, manifest: Path, tmp_path: Path) -> None:
    """Every task becomes a verified WAV with a sidecar; each is submitted exactly once."""
    out = tmp_path / "out"
    result = await run(served, manifest, fast(out))
    assert result.exit_code == 0 and result.done == 8 and not result.failed  # type: ignore[attr-defined]
    folder = out / "e2e"
    wavs = sorted(p.name for p in folder.glob("*.wav"))
    assert len(wavs) == 8 and "calm-t2-temperature1.1.wav" in wavs and "battle-temperature0.9.wav" in wavs
    assert not list(folder.glob("*.part"))
    stats = served.sim.stats()
    assert set(jobs_per_task(stats).values()) == {1} and len(stats["jobs"]) == 8
    sidecar = json.loads((folder / "battle-temperature0.9.json").read_text())
    assert sidecar["params"]["temperature"] == 0.9 and sidecar["model"] == "model_meta-musicgen"
    assert sidecar["jobId"] in {j["id"] for j in stats["jobs"]} and sidecar["cost"] == 1
    data = (folder / "battle-temperature0.9.wav").read_bytes()
    assert data == render("epic battle, 140 bpm", sidecar["seed"], 1.0, 1)
    assert sidecar["bytes"] == len(data)
    replayed = Ledger.read(folder, "e2e")
    assert {st.status for st in replayed.tasks.values()} == {Status.DONE}
    assert result.spent == 8  # type: ignore[attr-defined]


async def test_rerun_skips_done_and_regenerates_only_changed(served: Served, manifest: Path, tmp_path: Path) -> None:
    """A rerun submits nothing; editing one track regenerates only its tasks, replacing the files."""
    out = tmp_path / "out"
    await run(served, manifest, fast(out))
    again = await run(served, manifest, fast(out))
    assert again.skipped == 8 and again.done == 0  # type: ignore[attr-defined]
    assert len(served.sim.jobs) == 8
    old = (out / "e2e" / "market-temperature0.9.wav").read_bytes()
    manifest.write_text(MANIFEST.replace("village market, 110 bpm", "night market, 90 bpm"))
    changed = await run(served, manifest, fast(out))
    assert changed.done == 2 and changed.skipped == 6  # type: ignore[attr-defined]
    assert len(served.sim.jobs) == 10
    new = (out / "e2e" / "market-temperature0.9.wav").read_bytes()
    assert new != old and json.loads((out / "e2e" / "market-temperature0.9.json").read_text())["prompt"] == (
        "night market, 90 bpm"
    )


async def test_rate_and_in_flight_limits_hold(served: Served, tmp_path: Path) -> None:
    """Never more than --rate submissions in any 1 s window, never more than --max-in-flight jobs."""
    served.sim.job_time = 0.3
    path = tmp_path / "m.yaml"
    body = "".join(f"  - {{name: t{i}, prompt: p{i}}}\n" for i in range(24))
    path.write_text(f"batch: limits\nseed: 1\ndefaults: {{duration: 1}}\ntracks:\n{body}")
    result = await run(served, path, fast(tmp_path / "out", rate=8, max_in_flight=3))
    assert result.done == 24  # type: ignore[attr-defined]
    stats = served.sim.stats()
    times = sorted(stats["submit_times"])
    worst = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    spans = [round(times[i + 8] - times[i], 3) for i in range(len(times) - 8)]
    assert worst <= 8, spans
    assert stats["max_active"] <= 3


async def test_job_failure_is_resubmitted_once_then_fails(served: Served, tmp_path: Path) -> None:
    """A failed job (refunded) is resubmitted --job-retries times, then the task fails with the reason."""
    served.sim.faults = Faults(failure_rate=1.0)
    path = tmp_path / "m.yaml"
    path.write_text("batch: fails\nseed: 1\ntracks:\n  - {name: a, prompt: p, duration: 1}\n")
    result = await run(served, path, fast(tmp_path / "out", job_retries=1))
    assert result.exit_code == 1 and "GPU worker crashed" in result.failed["a"]  # type: ignore[attr-defined]
    assert len(served.sim.jobs) == 2 and served.sim.stats()["charged"] == 0
    # Failed tasks stay failed on a rerun unless --retry-failed.
    again = await run(served, path, fast(tmp_path / "out"))
    assert "a" in again.failed and len(served.sim.jobs) == 2  # type: ignore[attr-defined]
    served.sim.faults = Faults()
    retried = await run(served, path, fast(tmp_path / "out", retry_failed=True))
    assert retried.exit_code == 0 and len(served.sim.jobs) == 3  # type: ignore[attr-defined]


async def test_permanent_error_fails_task_and_run_goes_on(served: Served, tmp_path: Path) -> None:
    """A 400 for one task fails that task with the API's reason; the others finish."""
    served.sim.faults = Faults(refuse_prompts=("forbidden",))
    path = tmp_path / "m.yaml"
    path.write_text(
        "batch: mixed\nseed: 1\ntracks:\n  - {name: a, prompt: p, duration: 1}\n"
        "  - {name: b, prompt: forbidden tune, duration: 1}\n"
    )
    result = await run(served, path, fast(tmp_path / "out"))
    assert result.done == 1 and "moderation" in result.failed["b"]  # type: ignore[attr-defined]
    assert Ledger.read(tmp_path / "out" / "mixed", "mixed").tasks["b"].permanent


async def test_credentials_rejected_stops_at_once(served: Served, manifest: Path, tmp_path: Path) -> None:
    """401 from the API stops the run with a credentials error; nothing is marked failed."""
    from batchgen.errors import CredentialsError

    async with ScenarioClient(served.url, Credentials(KEY, "nope")) as client:
        with pytest.raises(CredentialsError):
            await Runner(load(manifest), client, fast(tmp_path / "out"), Reporter(quiet=True)).run()
    replayed = Ledger.read(tmp_path / "out" / "e2e", "e2e")
    assert not any(st.status is Status.FAILED for st in replayed.tasks.values())


async def test_input_audio_uploaded_once(served: Served, tmp_path: Path) -> None:
    """A melody used by several tasks is uploaded once, and its asset id is sent with each."""
    (tmp_path / "theme.wav").write_bytes(render("theme", 1, 1.0, 1))
    path = tmp_path / "m.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            batch: mel
            seed: 1
            defaults: {duration: 1, inputAudio: theme.wav}
            tracks:
              - {name: a, prompt: piano, takes: 2}
              - {name: b, prompt: strings}
            """
        )
    )
    result = await run(served, path, fast(tmp_path / "out"))
    assert result.done == 3  # type: ignore[attr-defined]
    uploads = list(served.sim.uploads.values())
    gens = [j for j in served.sim.stats()["jobs"] if j["kind"] == "generate"]
    assert len(uploads) == 1 and uploads[0].status == "imported"
    assert {j["params"]["inputAudio"] for j in gens} == {uploads[0].asset_id}
    await run(served, path, fast(tmp_path / "out", retry_failed=True))
    assert len(served.sim.uploads) == 1


async def test_expired_urls_are_refreshed(served: Served, manifest: Path, tmp_path: Path) -> None:
    """Asset URLs that are already expired when fetched get refreshed through the asset endpoint."""
    served.sim.faults = Faults(expired_rate=0.3, seed=4)
    result = await run(served, manifest, fast(tmp_path / "out"))
    assert result.done == 8  # type: ignore[attr-defined]
    assert served.sim.faults.injected["url-expired-seen"] >= 1

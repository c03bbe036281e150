"""The runner end to end against the simulator: in-process for speed, with real sockets."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from batchgen import load
from batchgen.core.events import Intent
from batchgen.core.state import Status
from batchgen.run.progress import Reporter
from batchgen.run.runner import Runner
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.simulator import Faults
from batchgen.simulator.audio import render
from batchgen.store.ledger import Ledger

from ..conftest import KEY, SECRET, Served
from ..helpers import fast, run

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
    body = "".join(f"  - {{name: t{i}, prompt: p{i}}}\n" for i in range(17))
    path.write_text(f"batch: limits\nseed: 1\ndefaults: {{duration: 1}}\ntracks:\n{body}")
    result = await run(served, path, fast(tmp_path / "out", rate=8, max_in_flight=3))
    assert result.done == 17  # type: ignore[attr-defined]
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
    from batchgen.core.errors import CredentialsError

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


async def test_melodies_each_uploaded_once_the_sdk_way(served: Served, tmp_path: Path) -> None:
    """Two tracks share one inputAudio, a third has its own: two uploads, each polled until imported,
    and every job's inputAudio is the entityId of its own file."""
    (tmp_path / "theme.wav").write_bytes(render("theme", 1, 1.0, 1))
    (tmp_path / "other.wav").write_bytes(render("other", 2, 1.0, 1))
    path = tmp_path / "m.yaml"
    path.write_text(
        "batch: melodies\nseed: 2\ndefaults: {duration: 1, modelVersion: melody-large}\ntracks:\n"
        "  - {name: a, prompt: piano, inputAudio: theme.wav}\n"
        "  - {name: b, prompt: strings, inputAudio: theme.wav}\n"
        "  - {name: c, prompt: brass, inputAudio: other.wav}\n"
    )
    served.sim.upload_time = 0.1  # `validating` for a moment, as the SDK describes
    result = await run(served, path, fast(tmp_path / "out"))
    assert result.done == 3  # type: ignore[attr-defined]
    uploads = {u.file_name: u for u in served.sim.uploads.values()}
    assert sorted(uploads) == ["other.wav", "theme.wav"] and {u.status for u in uploads.values()} == {"imported"}
    assert all(u.job_id is None for u in uploads.values())  # imported without a job, as the SDK documents
    sent = {j.params["prompt"]: j.params["inputAudio"] for j in served.sim.jobs.values() if j.kind == "generate"}
    assert sent == {
        "piano": uploads["theme.wav"].asset_id,
        "strings": uploads["theme.wav"].asset_id,
        "brass": uploads["other.wav"].asset_id,
    }
    assert served.sim.requests["GET /v1/uploads/{upload_id}"] >= 2  # polled, not assumed


async def test_every_request_carries_the_project_and_reconciliation_stays_in_it(served: Served, tmp_path: Path) -> None:
    """A manifest's project goes on every API request; a job with the same body in another project is
    never adopted for an unanswered submission."""
    path = tmp_path / "m.yaml"
    path.write_text("batch: proj\nseed: 4\nproject: proj_music\ntracks:\n  - {name: a, prompt: p, duration: 1}\n")
    task = load(path)
    from batchgen import expand

    body = expand(task)[0].body()
    # The same body, submitted in the default project: it must not be taken for ours.
    async with ScenarioClient(served.url, Credentials(KEY, SECRET)) as other:
        await other.generate("model_meta-musicgen", body)
    folder = tmp_path / "out" / "proj"
    ledger = Ledger.open(folder, "proj")
    ledger.start("proj", None)
    ledger.record(Intent(task="a", digest=expand(task)[0].digest, attempt=1), durable=True)  # a POST never answered
    ledger.close()
    async with ScenarioClient(served.url, Credentials(KEY, SECRET), project="proj_music") as client:
        result = await Runner(task, client, fast(tmp_path / "out"), Reporter(quiet=True)).run()
    assert result.done == 1
    assert set(served.sim.projects) >= {"proj_music"}
    assert served.sim.projects[None] == 1  # only the other client's request had no project
    mine = [j for j in served.sim.jobs.values() if j.project == "proj_music"]
    assert len(mine) == 1 and not any(e.get("adopted") for e in _events(folder))


def _events(folder: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (folder / ".batchgen" / "state.jsonl").read_text().splitlines()]


def test_manifest_project_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SCENARIO_PROJECT_ID is used unless the manifest names a project."""
    from batchgen.cli import main
    from batchgen.simulator import Simulator, SimulatorThread

    for manifest_project, env_project, expected in (
        ("proj_manifest", "proj_env", "proj_manifest"),
        (None, "proj_env", "proj_env"),
    ):
        sim = Simulator(key=KEY, secret=SECRET, job_time=0.02)
        with SimulatorThread(sim) as thread:
            line = f"project: {manifest_project}\n" if manifest_project else ""
            path = tmp_path / f"{expected}.yaml"
            path.write_text(f"batch: b{expected}\nseed: 1\n{line}tracks:\n  - {{name: a, prompt: p, duration: 1}}\n")
            for key, value in {
                "SCENARIO_BASE_URL": thread.base_url,
                "SCENARIO_API_KEY": KEY,
                "SCENARIO_API_SECRET": SECRET,
                "SCENARIO_PROJECT_ID": env_project,
            }.items():
                monkeypatch.setenv(key, value)
            args = ["run", str(path), "--out", str(tmp_path / "out"), "-q", "--rate", "50", "--poll-interval", "0.05"]
            assert main([*args, "--no-report"]) == 0
            assert set(sim.projects) == {expected}


async def test_credentials_revoked_mid_run_end_it_with_the_error_itself(served: Served, tmp_path: Path) -> None:
    """A 401 while jobs run ends the run with the CredentialsError (the CLI's one line, exit 2),
    not a TaskGroup's ExceptionGroup, which the CLI would show as a traceback."""
    from batchgen.core.errors import CredentialsError

    served.sim.job_time = 0.3
    path = tmp_path / "m.yaml"
    body = "".join(f"  - {{name: t{i}, prompt: p{i}}}\n" for i in range(12))
    path.write_text(f"batch: revoked\nseed: 1\ndefaults: {{duration: 1}}\ntracks:\n{body}")

    async def revoke() -> None:
        await asyncio.sleep(0.4)  # the first jobs are running by then
        served.sim.key = "revoked"

    revoking = asyncio.create_task(revoke())
    with pytest.raises(CredentialsError, match="401"):
        await run(served, path, fast(tmp_path / "out", rate=5, max_in_flight=2))
    await revoking

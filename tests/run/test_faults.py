"""The fault matrix: whole batches against a simulator that gets things wrong on purpose.

Each fault at 10-20 %, then all of them at once. After every batch: each task done (or
failed for the reason its fault implies), every file byte-identical to what the server
made, no partial file under a final name, and no task paid for twice: extra jobs exist
only where a job failed and was refunded. Then SIGKILL at random moments across seeds.
"""

from __future__ import annotations

import hashlib
import json
import random
import resource
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen import expand, load
from batchgen.core.errors import JournalError
from batchgen.core.retry import Backoff
from batchgen.core.state import replay
from batchgen.run.progress import Reporter
from batchgen.run.runner import RunConfig, Runner, RunResult
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.simulator import Faults, Simulator, SimulatorThread
from batchgen.store.ledger import Ledger

from ..conftest import KEY, SECRET, Served
from ..helpers import ROOT, check_invariants, env_for, journal_events, run_cli, start, wait_for

TRACKS = 12
TAKES = 2
MANIFEST = (
    "batch: matrix\nseed: 21\ndefaults: {duration: 1, modelVersion: melody-large}\ntakes: 2\ntracks:\n"
    + "".join(f"  - {{name: track{i}, prompt: 'fault matrix {i}, {60 + 5 * i} bpm'}}\n" for i in range(TRACKS))
)
QUICK = Backoff(base=0.01, cap=0.2, attempts=12)

MATRIX: dict[str, dict[str, object]] = {
    "rate-limit": dict(rate_limit=15, retry_style="mixed"),
    "action-limit": dict(action_limit=4, action_wait=0.2),
    "errors": dict(error_rate=0.15),
    "drops": dict(drop_rate=0.15),
    "drops, listing without input": dict(drop_rate=0.15, list_hides_input=True),
    "job-failures": dict(failure_rate=0.2),
    "truncation": dict(truncate_rate=0.2),
    "expired-urls": dict(expired_rate=0.2),
    "range-ignored": dict(truncate_rate=0.2, ignore_range=True),
    "oversize": dict(oversize_rate=0.15),
    "short pages": dict(short_pages=True, drop_rate=0.1),
    "everything": dict(
        rate_limit=20,
        action_limit=6,
        action_wait=0.2,
        error_rate=0.1,
        drop_rate=0.1,
        failure_rate=0.1,
        truncate_rate=0.1,
        expired_rate=0.1,
        oversize_rate=0.1,
    ),
}


async def run_batch(served: Served, tmp_path: Path, **config: object) -> RunResult:
    path = tmp_path / "matrix.yaml"
    path.write_text(MANIFEST)
    settings: dict[str, object] = dict(
        out=tmp_path / "out", rate=40, max_in_flight=12, poll_interval=0.02, poll_max=0.05, backoff=QUICK
    )
    settings.update(config)
    async with ScenarioClient(served.url, Credentials(KEY, SECRET), read_timeout=5) as client:
        return await Runner(load(path), client, RunConfig(**settings), Reporter(quiet=True)).run()  # type: ignore[arg-type]


def audit(sim: Simulator, folder: Path, result: RunResult) -> None:
    """The invariants of the module docstring."""
    jobs: dict[tuple[str, int], list[str]] = defaultdict(list)
    for job in sim.jobs.values():
        if job.kind == "generate":
            jobs[(job.params["prompt"], job.params["seed"])].append(job.status(sim.now())[0])
    assert len(jobs) == TRACKS * TAKES
    for statuses in jobs.values():
        paid = [s for s in statuses if s != "failure"]
        assert len(paid) <= 1, f"paid twice: {statuses}"
    assert not list(folder.glob("*.part"))
    done = {p.stem for p in folder.glob("*.json")}
    assert len(done) + len(result.failed) == TRACKS * TAKES
    for name in done:
        sidecar = json.loads((folder / f"{name}.json").read_text())
        data = (folder / sidecar["file"]).read_bytes()
        job = sim.jobs[sidecar["jobId"]]
        assert sim.assets[job.asset_ids[0]].data == data
        assert hashlib.sha256(data).hexdigest() == sidecar["sha256"]
    for name, reason in result.failed.items():
        # Only refunded job failures may defeat a task here: everything else is retried.
        assert "job failed 2 time(s)" in reason, (name, reason)


@pytest.mark.parametrize("fault", list(MATRIX))
async def test_fault_matrix(served: Served, tmp_path: Path, fault: str) -> None:
    """A batch of 24 tasks survives the fault: done, correct bytes, nothing paid twice."""
    served.sim.faults = Faults(seed=7, **MATRIX[fault])  # type: ignore[arg-type]
    served.sim.job_time = 0.05
    result = await run_batch(served, tmp_path)
    audit(served.sim, tmp_path / "out" / "matrix", result)
    injected = served.sim.faults.injected
    assert sum(injected.values()) > 0, "the fault never fired: the test proved nothing"
    if fault != "job-failures" and fault != "everything":
        assert not result.failed
    print(f"{fault}: injected {dict(injected)}; done {result.done}, failed {len(result.failed)}")


async def test_action_limit_lowers_the_cap(served: Served, tmp_path: Path) -> None:
    """A 429 with details.actionLimit lowers the in-flight cap for the rest of the run."""
    served.sim.faults = Faults(action_limit=3, action_wait=0.2)
    served.sim.job_time = 0.1
    await run_batch(served, tmp_path, max_in_flight=10)
    assert served.sim.max_active <= 3
    assert served.sim.faults.injected["action-limit"] >= 1


async def test_non_audio_download_fails_with_reason(served: Served, tmp_path: Path) -> None:
    """A download that comes back as an HTML page is refused with the reason; the paid job is
    downloaded by the next run, not submitted again."""
    served.sim.faults = Faults(html_rate=1.0)
    result = await run_batch(served, tmp_path)
    assert len(result.failed) == TRACKS * TAKES and all("not audio" in r for r in result.failed.values())
    assert not list((tmp_path / "out" / "matrix").glob("*.wav"))
    jobs = len(served.sim.jobs)
    served.sim.faults = Faults()
    again = await run_batch(served, tmp_path)
    assert again.exit_code == 0 and again.done == TRACKS * TAKES
    assert len(served.sim.jobs) == jobs  # nothing paid twice
    audit(served.sim, tmp_path / "out" / "matrix", again)


async def test_oversized_download_is_cut_off_and_failed(served: Served, tmp_path: Path) -> None:
    """A server that always sends more than the asset's size fills nothing: the task fails."""
    served.sim.faults = Faults(oversize_rate=1.0)
    result = await run_batch(served, tmp_path, backoff=Backoff(base=0.01, cap=0.02, attempts=3))
    assert len(result.failed) == TRACKS * TAKES
    assert all("cut off" in r for r in result.failed.values())
    assert not list((tmp_path / "out" / "matrix").glob("*.part"))


async def test_stuck_job_times_out_and_is_canceled(served: Served, tmp_path: Path) -> None:
    """A job past --job-timeout is failed with a clear reason and canceled on the server."""
    served.sim.faults = Faults(stuck_rate=1.0)
    result = await run_batch(served, tmp_path, job_timeout=0.3)
    assert len(result.failed) == TRACKS * TAKES
    assert all("--job-timeout" in r for r in result.failed.values())
    assert {j.canceled for j in served.sim.jobs.values()} == {True}


def test_journal_damage_is_skipped_with_line_numbers() -> None:
    """A torn last line, a garbage line and an unknown event are skipped with their line numbers."""
    lines = [
        '{"ev":"batch","v":1,"batch":"b","base_seed":3}',
        '{"ev":"intent","task":"a","digest":"d1","t":1}',
        "garbage here",
        '{"ev":"teleported","task":"a"}',
        '{"ev":"submitted","task":"a","job_id":"job_1"}',
        '{"ev":"succeeded","task":"a","job_id":"job_1","asset_ids":["as',
    ]
    out = replay(lines, "j")
    assert out.tasks["a"].job_id == "job_1" and out.tasks["a"].status.value == "in-flight"
    assert out.warnings == [
        "j:3: unreadable line skipped",
        "j:4: unknown event 'teleported'; line skipped",
        "j:6: unreadable line skipped",
    ]
    with pytest.raises(JournalError, match="newer"):
        replay(['{"ev":"batch","v":99,"batch":"b"}'])


def test_journal_of_another_batch_is_refused(tmp_path: Path) -> None:
    """A journal from a different batch name is refused with exit 2 and left untouched."""
    (tmp_path / "m.yaml").write_text(MANIFEST)
    journal = tmp_path / "out" / "matrix" / ".batchgen" / "state.jsonl"
    journal.parent.mkdir(parents=True)
    journal.write_text('{"ev":"batch","v":1,"batch":"someone-else"}\n')
    before = journal.read_bytes()
    result = run_cli(["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--simulate"], env_for(None))
    assert result.returncode == 2 and "someone-else" in result.stderr
    assert journal.read_bytes() == before


@pytest.fixture
def thread() -> Iterator[SimulatorThread]:
    with SimulatorThread(Simulator(key=KEY, secret=SECRET, job_time=0.2, faults=Faults(seed=3))) as t:
        yield t


CRASH_MANIFEST = "batch: crash\nseed: 8\ndefaults: {duration: 1, modelVersion: melody-large}\ntracks:\n" + "".join(
    f"  - {{name: c{i}, prompt: 'crash test {i}'}}\n" for i in range(6)
)


@pytest.mark.parametrize("seed", range(10))
def test_sigkill_at_a_random_moment(thread: SimulatorThread, tmp_path: Path, seed: int) -> None:
    """SIGKILL somewhere in the run (sometimes inside the POST-to-journal window); one rerun finishes it all."""
    rng = random.Random(seed)
    thread.sim.faults.submit_delay = rng.choice((0.0, 0.0, 0.3))  # a third of the runs widen the crash window
    (tmp_path / "m.yaml").write_text(CRASH_MANIFEST)
    args = ["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--rate", "10", "--poll-interval", "0.05"]
    folder = tmp_path / "out" / "crash"
    proc = start(args, env_for(thread))
    events = rng.randint(1, 16)  # kill after this many journal events have been written
    try:
        wait_for(lambda: len(journal_events(folder)) >= events or proc.poll() is not None, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    thread.sim.faults.submit_delay = 0.0
    resumed = run_cli(args, env_for(thread))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_invariants(thread.sim, folder, 6)


def test_disk_error_stops_submitting_and_rerun_finishes(thread: SimulatorThread, tmp_path: Path) -> None:
    """A write failure (file-size limit) stops new submissions, exits non-zero naming the file;
    the rerun downloads what was paid for without submitting anything again."""
    manifest = CRASH_MANIFEST.replace("duration: 1", "duration: 4")  # 128 KB files, past the limit below
    (tmp_path / "m.yaml").write_text(manifest)
    args = ["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--rate", "2", "--poll-interval", "0.05"]

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    failed = subprocess.run(
        [sys.executable, "-m", "batchgen", *args],
        env=env_for(thread),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=small_files,
    )
    assert failed.returncode == 1, failed.stderr
    assert ".wav.part" in failed.stderr and "too large" in failed.stderr and "rerun" in failed.stderr
    submitted_before = len(thread.sim.jobs)
    assert submitted_before < 6, "submissions should stop after the first write failure"
    resumed = run_cli(args, env_for(thread))
    assert resumed.returncode == 0, resumed.stderr
    check_invariants(thread.sim, tmp_path / "out" / "crash", 6)
    paid = Counter(j.params["seed"] for j in thread.sim.jobs.values())
    assert set(paid.values()) == {1}


async def test_unsure_submissions_wait_for_the_next_run(served: Served, tmp_path: Path) -> None:
    """A POST whose answer was lost while the job list cannot be read is left for the next run, not resent."""
    served.sim.faults = Faults(drop_rate=1.0, seed=11)
    unsure = await run_batch(served, tmp_path, backoff=Backoff(base=0.01, cap=0.02, attempts=3))
    assert len(unsure.failed) == TRACKS * TAKES
    assert all("rerun" in reason for reason in unsure.failed.values())
    created = sum(1 for j in served.sim.jobs.values() if j.kind == "generate")
    assert 0 < created < TRACKS * TAKES  # some POSTs made a job before the connection dropped
    ledger = Ledger.read(tmp_path / "out" / "matrix", "matrix")  # `status` sees why each task waits
    waiting = ledger.figures(ledger.rows(expand(load(tmp_path / "matrix.yaml")))).waiting
    assert set(waiting) == set(unsure.failed) and all("rerun" in why for why in waiting.values())
    served.sim.faults = Faults(seed=11)
    again = await run_batch(served, tmp_path)
    assert not again.failed
    audit(served.sim, tmp_path / "out" / "matrix", again)
    ledger = Ledger.read(tmp_path / "out" / "matrix", "matrix")
    assert not ledger.figures(ledger.rows(expand(load(tmp_path / "matrix.yaml")))).waiting  # done: nothing waits


def test_a_wait_past_max_wait_leaves_the_rest_for_the_next_run(thread: SimulatorThread, tmp_path: Path) -> None:
    """Told to come back in a day (longer than --max-wait), the run stops submitting at once,
    finishes the jobs already running, leaves the rest new (not failed), says why and exits 1;
    the next run submits them, paying nothing twice."""
    thread.sim.faults.quota = 2  # two submissions, then every submit: 429, Retry-After: 86400
    thread.sim.job_time = 0.5
    (tmp_path / "m.yaml").write_text(CRASH_MANIFEST)
    base = ["--out", str(tmp_path / "out")]
    args = ["run", str(tmp_path / "m.yaml"), *base, "--rate", "50", "--poll-interval", "0.05", "--max-wait", "5"]
    held = run_cli(args, env_for(thread))
    assert held.returncode == 1, held.stdout + held.stderr
    assert (
        "4 task(s) not submitted: the API asked to come back in 24 hours, longer than --max-wait 5 s" in held.stdout
    ), held.stdout
    assert "Traceback" not in held.stderr and "failed" not in held.stdout.split("\n", 1)[1]
    assert held.stdout.startswith("batch crash: 2/6 done (2 new")  # the two running jobs were followed to the end
    assert float(held.stdout.split("\n")[0].rsplit(", ", 1)[1].rstrip("s")) < 5, held.stdout  # no waiting it out
    status = json.loads(run_cli(["status", str(tmp_path / "m.yaml"), *base, "--json"], env_for(None)).stdout)
    assert status["counts"] == {"done": 2, "new": 4}, status
    thread.sim.faults.quota = None
    resumed = run_cli(args, env_for(thread))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_invariants(thread.sim, tmp_path / "out" / "crash", 6)

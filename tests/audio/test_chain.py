"""Long tracks and loops: chains of continuation jobs, stitched exactly; loops that wrap seamlessly."""

from __future__ import annotations

import itertools
import json
import math
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen import expand, load
from batchgen.audio.stitch import HopFile, close_loop, stitch, wrap_smoothness
from batchgen.audio.wavfile import frames, read_info
from batchgen.core.chain import ChainSettings, Loop, hop_seed, plan
from batchgen.listen import report
from batchgen.run.runner import RunResult
from batchgen.simulator import Faults, Simulator, SimulatorThread
from batchgen.simulator.audio import render

from ..conftest import KEY, SECRET, Served
from ..helpers import count, env_for, fast, journal_events, run, run_cli, start, wait_for

MANIFEST = """\
batch: long
seed: 6
defaults: {duration: 30, modelVersion: melody-large}
chain: {context: 5}
tracks:
  - {name: boss, prompt: "epic battle, 140 bpm", length: 75}
  - {name: walk, prompt: "village walk, 100 bpm", length: 50, takes: 2}
  - {name: tavern, prompt: "cozy tavern, 96 bpm", loop: {bpm: 96, bars: 16}}
  - {name: sting, prompt: "victory sting, 120 bpm", loop: {bpm: 120, bars: 4}}
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "long.yaml"
    path.write_text(MANIFEST)
    return path


def samples(path: Path, start: float = 0.0, seconds: float | None = None) -> list[float]:
    info = read_info(path)
    first = round(start * info.rate)
    count = None if seconds is None else round(seconds * info.rate)
    out: list[float] = []
    for block in frames(path, info, first, count):
        out.extend(block)
    return out


@pytest.mark.parametrize(
    ("duration", "target", "context", "hops"),
    [(30, 75, 5, 3), (30, 75, 10, 4), (30, 150, 10, 7), (30, 20, 10, 1), (8, 40.05, 3, 8), (30, 30.05, 10, 2)],
)
def test_plan_counts_hops_and_the_last_asks_only_for_what_is_missing(
    duration: float, target: float, context: float, hops: int
) -> None:
    """1 + ceil((length - duration) / (duration - context)) hops; enough audio, never more than a job's worth extra."""
    planned = plan(duration, target, ChainSettings(context=context, crossfade=0.05), seed=9)
    assert len(planned) == hops
    made = planned[0].duration + sum(h.duration - h.context for h in planned[1:])
    assert target <= made < target + duration
    if made - planned[-1].duration + duration - planned[-1].context >= target + (hops - 1) * 0.05:
        assert made >= target + (hops - 1) * 0.05  # room for the crossfades, when the last hop has it
    assert all(h.duration <= 30 and h.duration >= 1 for h in planned)
    for before, after in itertools.pairwise(planned):
        assert after.continue_from == before.duration - context and after.context == context
    assert [h.seed for h in planned] == [hop_seed(9, k) for k in range(1, hops + 1)] and planned[0].seed == 9


async def test_long_tracks_come_out_exactly_as_long_as_asked(served: Served, manifest: Path, tmp_path: Path) -> None:
    """A 75 s track from 30 s hops (3 hops), a 50 s track in 2 takes and two loops: exact lengths; hop 1 is
    sample-identical in the final file away from its seam; each later hop continued the previous one's asset."""
    served.sim.job_time = 0.05
    result = await run(served, manifest, fast(tmp_path / "out"))
    assert result.done == 5 and not result.failed, result.failed
    folder = tmp_path / "out" / "long"
    rate = 16000
    lengths = {p.name: read_info(p).frames for p in folder.glob("*.wav")}
    assert lengths == {
        "boss.wav": 75 * rate,
        "walk-t1.wav": 50 * rate,
        "walk-t2.wav": 50 * rate,
        "tavern.wav": round(Loop(96, 16).seconds * rate),
        "sting.wav": round(Loop(120, 4).seconds * rate),
    }
    assert not list(folder.glob("*.part")) and not list(folder.glob("*.h1.*"))  # hop files stay in .batchgen/hops
    sidecar = json.loads((folder / "boss.json").read_text())
    hops = sidecar["chain"]["hops"]
    assert [h["hop"] for h in hops] == [1, 2, 3] and all(h["promptRepeated"] for h in hops[1:])
    # Hop 1 is in the final file as it was made, up to its seam.
    first = served.sim.assets[hops[0]["assetId"]].data
    assert first is not None
    hop1 = folder / ".batchgen" / "hops" / "boss.h1.wav"
    assert hop1.read_bytes() == first
    assert samples(folder / "boss.wav", 0, 29.9) == samples(hop1, 0, 29.9)
    # Each hop after the first continued the previous hop's asset from its last `context` seconds.
    jobs = {j.id: j for j in served.sim.jobs.values()}
    for before, hop in itertools.pairwise(hops):
        sent = jobs[hop["jobId"]].params
        assert sent["continuation"] is True and sent["inputAudio"] == before["assetId"]
        assert sent["continuationEnd"] - sent["continuationStart"] == 5 and sent["seed"] == hop["seed"]
    assert [h["seamAt"] for h in hops[1:]] == pytest.approx([29.95, 54.95])
    # The listening room marks both seams on boss's waveform, and gives the loops a loop toggle.
    page = report.build(load(manifest), tmp_path / "out").read_text()
    boss = re.search(r'<figure[^>]*data-take="boss".*?</figure>', page, re.S)
    assert boss is not None and "3 hops" in boss.group()
    seams = re.search(r'<path class=seam d="([^"]*)"', boss.group())
    assert seams is not None and seams.group(1) == f"M{29.95 / 75 * 200:.1f} 0v40M{54.95 / 75 * 200:.1f} 0v40"
    tavern = re.search(r'<figure[^>]*data-take="tavern".*?</figure>', page, re.S)
    assert tavern is not None and "class=loop" in tavern.group() and "hear the wrap" in tavern.group()
    assert "class=loop" not in boss.group()


async def test_a_deleted_track_and_hop_are_fetched_and_stitched_again_at_no_charge(
    served: Served, tmp_path: Path
) -> None:
    """Paid hops are assets the API keeps: with the track and one hop file gone, a rerun
    downloads that hop again, stitches the same track and submits nothing."""
    served.sim.job_time = 0.05
    path = tmp_path / "one.yaml"
    path.write_text(
        "batch: one\nseed: 2\ndefaults: {duration: 30}\nchain: {context: 5}\n"
        "tracks:\n  - {name: boss, prompt: 'epic battle, 140 bpm', length: 75}\n"
    )
    assert (await run(served, path, fast(tmp_path / "out"))).done == 1
    folder = tmp_path / "out" / "one"
    made, submitted = (folder / "boss.wav").read_bytes(), count(folder, "submitted")
    (folder / "boss.wav").unlink()
    (folder / ".batchgen" / "hops" / "boss.h2.wav").unlink()
    again = await run(served, path, fast(tmp_path / "out"))
    assert again.done == 1 and again.spent == 0 and not again.failed
    assert count(folder, "submitted") == submitted and (folder / "boss.wav").read_bytes() == made


async def test_a_loop_wraps_as_smoothly_as_its_own_bar_lines(served: Served, manifest: Path, tmp_path: Path) -> None:
    """A loop is exactly its bars long, and played end to start it steps in level no more than across
    its own bar lines, and joins sample to sample like its inside does."""
    served.sim.job_time = 0.05
    await run(served, manifest, fast(tmp_path / "out"))
    folder = tmp_path / "out" / "long"
    for name, loop in (("tavern", Loop(96, 16)), ("sting", Loop(120, 4))):
        path = folder / f"{name}.wav"
        assert read_info(path).frames == round(loop.seconds * 16000)
        wrap = wrap_smoothness(path, loop)
        assert wrap["wrapStep"] <= wrap["barStepMax"] * 1.05, (name, wrap)
        assert wrap["wrapJump"] <= wrap["jumpP999"], (name, wrap)
        assert json.loads((folder / f"{name}.json").read_text())["chain"]["loop"]["wrap"]["wrapStep"] == pytest.approx(
            wrap["wrapStep"], abs=1e-4
        )


async def test_a_continuation_that_does_not_repeat_its_prompt_is_joined_whole(
    served: Served, manifest: Path, tmp_path: Path
) -> None:
    """When the API answers continuations with new audio only, nothing is dropped at the seams, the
    sidecar says so, and the track is still exactly as long as asked."""
    served.sim.job_time = 0.05
    served.sim.faults = Faults(continuation_new_only=True)
    result = await run(served, manifest, fast(tmp_path / "out"))
    assert result.done == 5
    folder = tmp_path / "out" / "long"
    hops = json.loads((folder / "boss.json").read_text())["chain"]["hops"]
    assert [h["promptRepeated"] for h in hops[1:]] == [False, False]
    assert all(h["similarity"] < 0.5 for h in hops[1:])
    assert read_info(folder / "boss.wav").frames == 75 * 16000


def test_stitching_keeps_the_seam_smooth_and_the_length_exact(tmp_path: Path) -> None:
    """Pure stitching of synthetic hops: a repeated prompt is dropped, the result is sample-exact."""
    hop1 = tmp_path / "h1.wav"
    hop1.write_bytes(render("steady, 100 bpm", 1, 6.0, 2))
    base = hop1.read_bytes()
    info = read_info(hop1)
    # Hop 2 repeats hop 1's last 2 s, then goes on.
    prompt = base[44 + (4 * 16000) * 4 :]
    more = render("steady, 100 bpm", 2, 3.0, 2)[44:]
    from batchgen.audio.wavfile import header

    hop2 = tmp_path / "h2.wav"
    hop2.write_bytes(header(info, (len(prompt) + len(more)) // 4) + prompt + more)
    out = tmp_path / "out.wav"
    report = stitch([HopFile(hop1), HopFile(hop2, 2.0)], out, 8.5, 0.05)
    assert read_info(out).frames == round(8.5 * 16000)
    assert report["seams"][0]["promptRepeated"] and report["seams"][0]["similarity"] > 0.99
    stitched = samples(out)
    assert stitched[: 5 * 16000 * 2] == samples(hop1)[: 5 * 16000 * 2]
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(("target", "fade"), [(9.0, 0.0), (8.98, 0.02), (8.5, 0.05)])
def test_hops_joined_whole_overlap_only_as_much_as_the_length_allows(
    tmp_path: Path, target: float, fade: float
) -> None:
    """New audio only (no prompt repeated): each seam's crossfade overlaps the hops, shortened when
    the hops hold no more than the length asked for; the result is still exact."""
    hop1, hop2 = tmp_path / "h1.wav", tmp_path / "h2.wav"
    hop1.write_bytes(render("steady, 100 bpm", 1, 6.0, 2))
    hop2.write_bytes(render("other, 70 bpm", 5, 3.0, 2))
    out = tmp_path / "out.wav"
    report = stitch([HopFile(hop1), HopFile(hop2, 2.0)], out, target, 0.05)
    assert read_info(out).frames == round(target * 16000)
    seam = report["seams"][0]
    assert not seam["promptRepeated"] and seam["crossfade"] == pytest.approx(fade, abs=1 / 16000)
    assert samples(out)[: 5 * 16000 * 2] == samples(hop1)[: 5 * 16000 * 2]


def test_close_loop_is_exact_in_frames(tmp_path: Path) -> None:
    """Closing a loop cuts to round(bars x beats x 60 / bpm x rate) frames, whatever the rate."""
    src = tmp_path / "src.wav"
    src.write_bytes(render("loop me, 97 bpm", 3, 12.0, 1))
    loop = Loop(97, 4, 3)
    info = close_loop(src, tmp_path / "loop.wav", loop, 0.05)
    assert info["frames"] == read_info(tmp_path / "loop.wav").frames == round(loop.seconds * 16000)
    assert math.isclose(info["seconds"], loop.seconds, abs_tol=1 / 16000)


def test_manifest_chain_checks() -> None:
    """length and loop anywhere a parameter goes; context must leave room for new audio."""
    import tempfile

    from batchgen import ManifestError

    root = Path(tempfile.mkdtemp())
    good = root / "good.yaml"
    good.write_text(
        "batch: b\nseed: 1\ndefaults: {duration: 20, length: 60}\n"
        "sweep: {loop: [{bpm: 90, bars: 8}, {bpm: 120, bars: 8}]}\n"
        "tracks:\n  - {name: a, prompt: p}\n"
    )
    tasks = expand(load(good))
    assert [t.loop.bpm for t in tasks] == [90, 120] and len({t.digest for t in tasks}) == 2
    (root / "rows.csv").write_text("name,prompt,length,loop\nx,p,90,\ny,q,,96/8\n")
    (root / "csv.yaml").write_text("batch: b\nseed: 1\ntracks_file: rows.csv\n")
    by_name = {t.name: t for t in expand(load(root / "csv.yaml"))}
    assert by_name["x"].length == 90 and by_name["y"].loop == Loop(96, 8)
    for text, field in (
        ("batch: b\nchain: {context: 9}\ntracks:\n  - {name: a, prompt: p, duration: 9, length: 60}\n", "length"),
        ("batch: b\ntracks:\n  - {name: a, prompt: p, loop: {bpm: 96}}\n", "loop"),
        ("batch: b\ntracks:\n  - {name: a, prompt: p, length: 99999}\n", "length"),
        ("batch: b\nchain: {context: 10, crossfade: 9}\ntracks:\n  - {name: a, prompt: p}\n", "chain.crossfade"),
        # 3,599 jobs of 2 s: more than a chain may hold (and more than the journal would take)
        ("batch: b\nchain: {context: 1}\ntracks:\n  - {name: a, prompt: p, duration: 2, length: 3600}\n", "length"),
    ):
        bad = root / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ManifestError) as caught:
            expand(load(bad), 1)
        assert caught.value.field == field, str(caught.value)


def test_every_hop_counts_against_the_batch_job_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks within the limit whose chains are not: the manifest is refused before anything is built."""
    from batchgen import ManifestError
    from batchgen.manifest import parse as manifest

    monkeypatch.setattr(manifest, "MAX_TASKS", 100)
    path = tmp_path / "m.yaml"
    path.write_text(
        "batch: b\nseed: 1\ndefaults: {duration: 30, length: 300}\ntracks:\n  - {name: a, prompt: p, takes: 20}\n"
    )
    with pytest.raises(ManifestError, match="more than 100 jobs"):
        expand(load(path))


async def test_chains_cost_every_hop_and_the_cap_never_starts_what_it_cannot_finish(
    served: Served, manifest: Path, tmp_path: Path
) -> None:
    """The estimate prices every hop; --max-cost reserves a whole chain before its first hop."""
    served.sim.job_time = 0.05
    priced = await run(served, manifest, fast(tmp_path / "out1", max_cost=10_000))
    total = served.sim.stats()["charged"]
    assert priced.estimate == total and total > 0
    served.sim.jobs.clear()
    capped = await run(served, manifest, fast(tmp_path / "out2", max_cost=60))
    charged = sum(j.cost for j in served.sim.jobs.values())
    assert charged <= 60 and capped.left_for_budget > 0
    chains = Counter(j.params.get("prompt") for j in served.sim.jobs.values())
    boss = [p for p in chains if str(p).startswith("epic")]
    assert not boss  # the 75 s track (3 hops, 63 CU) does not fit in 60 CU: not one hop of it was bought


async def test_a_hop_that_fails_for_good_fails_the_task_and_retry_failed_reuses_the_hops_made(
    served: Served, tmp_path: Path
) -> None:
    """A hop retried under --job-retries and failing again fails the task with the hop named;
    --retry-failed later continues from the hop already made, without paying for it again."""
    served.sim.job_time = 0.05
    served.sim.faults = Faults(fail_continuations=True)
    path = tmp_path / "m.yaml"
    path.write_text("batch: f\nseed: 3\ndefaults: {duration: 30}\ntracks:\n  - {name: theme, prompt: p, length: 50}\n")
    failed = await run(served, path, fast(tmp_path / "out", job_retries=1))
    assert failed.done == 0 and failed.failed["theme"].startswith("hop 2/2: "), failed.failed
    firsts = [j for j in served.sim.jobs.values() if not j.params.get("continuation")]
    assert len(firsts) == 1 and len(served.sim.jobs) == 3  # hop 1 once, hop 2 twice
    served.sim.faults = Faults()
    again = await run(served, path, fast(tmp_path / "out", retry_failed=True))
    assert again.done == 1 and not again.failed
    assert len([j for j in served.sim.jobs.values() if not j.params.get("continuation")]) == 1
    assert read_info(tmp_path / "out" / "f" / "theme.wav").frames == 50 * 16000


@pytest.fixture
def thread() -> Iterator[SimulatorThread]:
    with SimulatorThread(Simulator(key=KEY, secret=SECRET, job_time=0.6, faults=Faults(seed=5))) as t:
        yield t


def test_a_kill_during_hop_2_then_a_rerun_pays_for_no_hop_twice(thread: SimulatorThread, tmp_path: Path) -> None:
    """SIGKILL while hop 2 of a chain runs: the rerun polls hop 2's job, never pays for a hop twice,
    and the track comes out whole; status and plan showed it in flight at its hop."""
    (tmp_path / "m.yaml").write_text(
        "batch: killed\nseed: 2\ndefaults: {duration: 10, modelVersion: melody-large}\nchain: {context: 3}\n"
        "tracks:\n  - {name: long, prompt: 'long walk, 90 bpm', length: 30}\n"
    )
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "m.yaml"), "--out", str(out), "--rate", "20", "--poll-interval", "0.05"]
    proc = start(args, env_for(thread))
    folder = out / "killed"
    try:
        wait_for(lambda: any(e.get("ev") == "submitted" and e.get("hop") == 2 for e in journal_events(folder)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    plan_json = run_cli(["plan", str(tmp_path / "m.yaml"), "--out", str(out), "--json"], env_for(None))
    row = json.loads(plan_json.stdout.splitlines()[0])
    assert row["status"] == "in-flight" and row["hop"] == 2 and row["hops"] == 4, row
    resumed = run_cli(args, env_for(thread))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert read_info(folder / "long.wav").frames == 30 * 16000
    bodies = Counter(
        (j["params"].get("seed"), j["params"].get("continuationStart"))
        for j in thread.stats()["jobs"]
        if j["kind"] == "generate"
    )
    assert len(bodies) == 4 and set(bodies.values()) == {1}, bodies
    assert count(folder, "submitted") == 4


CHAIN = (  # three hops of 10, 10 and 9 s, each after the first continuing 2 s of the last: 24 s
    "batch: hops\nseed: 3\ndefaults: {duration: 10}\nchain: {context: 2}\n"
    "tracks:\n  - {name: theme, prompt: p, length: 24}\n"
)


async def _chain_with_a_bad_hop(served: Served, tmp_path: Path, **settings: object) -> RunResult:
    """The 24 s chain of CHAIN, its hop 2 answered wrongly as `settings` say (Faults' bad_hop fields)."""
    served.sim.job_time = 0.05
    served.sim.faults = Faults(bad_hop=2, **settings)  # type: ignore[arg-type]
    path = tmp_path / "m.yaml"
    path.write_text(CHAIN)
    return await run(served, path, fast(tmp_path / "out", hop_redos=1))


def _hop_jobs(sim: Simulator) -> list[int]:
    """The hop of each job made, in order (1: not a continuation, then one more per link)."""
    return [sim.assets[j.asset_ids[0]].depth for j in sim.jobs.values() if j.kind == "generate"]


@pytest.mark.parametrize("kind", ["rate", "channels", "short", "undecodable"])
async def test_an_unusable_hop_is_made_again_before_the_next_hop_is_paid(
    served: Served, tmp_path: Path, kind: str
) -> None:
    """A hop answered in another rate or channel count, shorter than asked or not decodable, is found as it lands:
    it is made again (paid twice, said so), and the next hop continues the good one."""
    result = await _chain_with_a_bad_hop(served, tmp_path, bad_hop_kind=kind)
    assert result.done == 1 and not result.failed, result.failed
    assert result.paid_twice == ["theme hop 2"]  # type: ignore[attr-defined]
    assert _hop_jobs(served.sim) == [1, 2, 2, 3]
    assert result.spent == sum(j.cost for j in served.sim.jobs.values())  # the unusable hop is paid too
    good = [j for j in served.sim.jobs.values() if served.sim.assets[j.asset_ids[0]].depth == 2][1]
    last = next(j for j in served.sim.jobs.values() if served.sim.assets[j.asset_ids[0]].depth == 3)
    assert last.params["inputAudio"] == good.asset_ids[0]  # hop 3 continues the hop made again
    assert read_info(tmp_path / "out" / "hops" / "theme.wav").frames == 24 * 16000
    assert count(tmp_path / "out" / "hops", "hop_unusable") == 1


async def test_a_hop_unusable_past_its_redo_fails_the_task_naming_the_hop(served: Served, tmp_path: Path) -> None:
    """Past --hop-redos the task fails naming the hop; nothing after it is paid, nothing stays in flight."""
    result = await _chain_with_a_bad_hop(served, tmp_path, bad_hop_kind="rate", bad_hop_times=5)
    path = tmp_path / "m.yaml"
    assert result.done == 0 and result.failed["theme"].startswith("hop 2/3: unusable (22050 Hz"), result.failed
    assert _hop_jobs(served.sim) == [1, 2, 2]  # hop 3 never sent
    status = run_cli(["status", str(path), "--out", str(tmp_path / "out"), "--json"], env_for(None))
    assert json.loads(status.stdout)["counts"] == {"failed": 1}


@pytest.mark.parametrize("kind", ["width", "mp3", "long"])
async def test_a_hop_in_another_width_or_codec_is_converted_and_a_long_one_cut(
    served: Served, tmp_path: Path, kind: str
) -> None:
    """A 32-bit float or MP3 hop after 16-bit WAV ones is converted, a hop longer than asked is cut to
    what was asked: nothing paid twice, the track exact, and every seam joins the prompt it continued."""
    result = await _chain_with_a_bad_hop(served, tmp_path, bad_hop_kind=kind)
    assert result.done == 1 and not result.failed, result.failed
    assert _hop_jobs(served.sim) == [1, 2, 3] and not result.paid_twice  # type: ignore[attr-defined]
    folder = tmp_path / "out" / "hops"
    hop2 = read_info(folder / ".batchgen" / "hops" / "theme.h2.wav")
    assert (hop2.bits, hop2.is_float, hop2.frames) == (16, False, 10 * 16000)
    assert read_info(folder / "theme.wav").frames == 24 * 16000
    hops = json.loads((folder / "theme.json").read_text())["chain"]["hops"]
    assert all(h["promptRepeated"] for h in hops[1:]), hops  # no jump where hop 3 continues hop 2

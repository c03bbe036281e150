"""batchgen's benchmark: makespan against the lower bound and a naive baseline, API requests
per task, CPU per task, 100k-task scale and download memory. Not a test: it measures.

    python bench/bench.py              # everything, about 12 minutes on 2 cores
    python bench/bench.py --quick      # smaller N, for a smoke run
    python bench/bench.py --makespan   # the makespan rows alone (about 8 minutes)
    python bench/bench.py --others     # everything else (about 5 minutes)

Every scenario gets a fresh simulator process (`batchgen simulate --fast-audio`), so its
CPU and request counts are its own; batchgen and the baseline run as child processes,
side by side in one run of this script, so their ratio survives a noisy machine. In the
makespan rows batchgen's simulator is strict (`--rate-limit R --jitter 5`: every
rate-counted arrival in any 1 s window, 5 ms of network jitter), and its rate 429s are
counted; the naive client has no rate limit of its own, so its simulator has none.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))
from batchgen.scenario.limits import earliest_finish  # noqa: E402  (the bound, as the tests hold it)
from batchgen.simulator.server import SimulatorProcess, stats_of  # noqa: E402


@contextmanager
def simulator(job_time: float, strict: int | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh simulator process; `strict`: its --rate-limit, counting every arrival in any 1 s
    window, with 5 ms of arrival jitter (as strict as an API may be)."""
    limits = ["--rate-limit", str(strict), "--jitter", "5"] if strict else []
    with SimulatorProcess("--job-time", str(job_time), "--fast-audio", *limits) as server:
        env = dict(os.environ, SCENARIO_BASE_URL=server.base_url, SCENARIO_API_KEY=server.key)
        env.update(SCENARIO_API_SECRET=server.secret)
        yield server.base_url, env


def manifest(path: Path, n: int) -> Path:
    tracks = "".join(f"  - {{name: t{i}, prompt: 'bench {i}'}}\n" for i in range(n))
    path.write_text(f"batch: bench\nseed: 1\ndefaults: {{duration: 1, modelVersion: melody-large}}\ntracks:\n{tracks}")
    return path


Pair = tuple[float, float, float, float, float, float]  # wall, CPU of ours, then naive's; then peak RSS of each


class Ran(NamedTuple):
    wall: float  # seconds
    cpu: float  # seconds, user + sys
    code: int  # exit code
    rss: float  # peak resident memory, MB


def child(cmd: list[str], env: dict[str, str]) -> Ran:
    """Run a command; wall seconds, CPU seconds (user+sys), exit code and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    return Ran(time.perf_counter() - t0, cpu, os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024)


def batchgen(env: dict[str, str], work: Path, n: int, rate: float, m: int, *extra: str) -> Ran:
    path = manifest(work / f"m{n}.yaml", n)
    out = work / f"out-{time.monotonic_ns()}"
    cmd = [PY, "-m", "batchgen", "run", str(path), "--out", str(out), "-q", "--rate", str(rate)]
    # --no-report: the baseline builds no listening page, so neither do we here.
    return child([*cmd, "--max-in-flight", str(m), "--poll-interval", "0.25", "--no-report", *extra], env)


def makespan(
    n: int, rate: float, m: int, job: float, work: Path, rows: list[str], pairs: int = 1, split: list[str] | None = None
) -> None:
    """One row: batchgen and the naive client, run one after the other `pairs` times
    (medians reported: CPU on a shared machine varies by a quarter from run to run).

    With `split`, each pair also runs both clients on a one-task manifest, and a row is
    added to `split`: what starting costs (interpreter, imports, manifest, one task) and
    what each further task costs, for each client."""
    # The schedule that starts each job as soon as the rate window and the in-flight cap
    # allow: start_i = max(start_i-1, start_i-R + 1 s, start_i-M + J), bound = start_N + J.
    bound = earliest_finish(n, rate, m, job)
    runs: list[Pair] = []
    strict: list[Strict] = []
    starts: list[tuple[float, float]] = []
    for pair in range(pairs):
        # Each client goes first in every other pair: whatever the first run of a pair
        # pays (a cold cache, the disk still writing the last run's files) is shared.
        first_ours = pair % 2 == 0
        runs.append(_pair(work, n, rate, m, job, first_ours, strict))
        if split is not None:
            _, ours_1, _, naive_1, _, _ = _pair(work, 1, rate, m, job, first_ours)
            starts.append((ours_1, naive_1))
    ours, ours_cpu, naive, naive_cpu = (statistics.median(run[i] for run in runs) for i in range(4))
    if split is not None:
        split.append(_split_row(n, runs, starts))
    each = ", ".join(f"{o / n * 1000:.2f}/{v / n * 1000:.2f}" for _, o, _, v, *_ in runs)
    rss = max(run[4] for run in runs), max(run[5] for run in runs)
    schedule = statistics.median(x.schedule for x in strict)
    priced = earliest_finish(n, rate, m, job, before=strict[0].dry_runs)
    refused = sum(x.refused for x in strict)
    rows.append(
        f"| N={n}, R={rate:g}/s, M={m}, J={job:g} s | {bound:.1f} s | {priced:.1f} s | {ours:.1f} s "
        f"| {ours / bound:.3f} | {schedule / priced:.3f} | {refused} | {naive:.1f} s | {ours / naive:.2f} "
        f"| {ours_cpu / n * 1000:.2f} ms | {naive_cpu / n * 1000:.2f} ms | {ours_cpu / naive_cpu:.2f} |"
        + f" peak RSS {rss[0]:.0f} MB, naive {rss[1]:.0f} MB;"
        + (f" medians of {pairs} pairs (ms, batchgen/naive: {each})" if pairs > 1 else "")
    )
    print(rows[-1], flush=True)


@dataclass
class Strict:
    """What the strict simulator saw of one batchgen run."""

    refused: int  # rate 429s
    dry_runs: int
    schedule: float  # first rate-counted arrival to the last job's end (last submit + J)


def _pair(
    work: Path, n: int, rate: float, m: int, job: float, first_ours: bool, strict: list[Strict] | None = None
) -> Pair:
    """Wall and CPU seconds of batchgen (against a strict simulator: its 429s and schedule go
    to `strict`), then of the naive client (which has no rate limit of its own, so its
    simulator has none), each run once on `n` tasks; then their peak RSS."""
    result: dict[str, Ran] = {}
    for who in ("ours", "naive") if first_ours else ("naive", "ours"):
        if who == "naive":
            result[who] = _naive(work, n, m, job)
        else:
            with simulator(job, strict=max(1, int(rate))) as (url, env):
                result[who] = batchgen(env, work, n, rate, m)
                seen = stats_of(url)
            if strict is not None:
                arrivals = seen["rate_arrivals"]
                schedule = max(seen["submit_times"]) + job - min(arrivals)
                strict.append(Strict(seen["faults"].get("rate-limit", 0), seen["dry_runs"], schedule))
    ours, naive = result["ours"], result["naive"]
    assert ours.code == 0 and naive.code == 0, (n, ours.code, naive.code)
    return ours.wall, ours.cpu, naive.wall, naive.cpu, ours.rss, naive.rss


def _split_row(n: int, runs: list[Pair], starts: list[tuple[float, float]]) -> str:
    """Startup (a one-task run) and the CPU of each further task, per client, medians over pairs."""
    ours_1, naive_1 = (statistics.median(s[i] for s in starts) for i in range(2))
    ours_each = statistics.median((r[1] - s[0]) / (n - 1) for r, s in zip(runs, starts, strict=True))
    naive_each = statistics.median((r[3] - s[1]) / (n - 1) for r, s in zip(runs, starts, strict=True))
    return (
        f"| CPU split of the first row: a one-task run, then each further task "
        f"| batchgen {ours_1 * 1000:.0f} ms + {ours_each * 1000:.2f} ms a task, "
        f"naive {naive_1 * 1000:.0f} ms + {naive_each * 1000:.2f} ms a task "
        f"| startup {ours_1 / naive_1:.2f}x, each further task {ours_each / naive_each:.2f}x; "
        f"medians of {len(starts)} pairs"
    )


def _naive(work: Path, n: int, m: int, job: float) -> Ran:
    with simulator(job) as (_, env):
        out = work / f"naive-{time.monotonic_ns()}"
        out.mkdir()
        return child([PY, str(ROOT / "bench" / "naive.py"), str(n), str(m), str(out)], env)


def requests_per_task(n: int, job: float, work: Path) -> str:
    with simulator(job) as (url, env):
        code = batchgen(env, work, n, 50, n).code
        seen = stats_of(url)["requests"]
    total = sum(seen.values())
    detail = ", ".join(f"{k.replace('/v1', '')}: {v}" for k, v in sorted(seen.items()))
    return f"| requests per task, N={n}, J={job:g} s | {total / n:.2f} | {detail} | exit {code}"


def cpu_per_task(n: int, work: Path) -> str:
    with simulator(0.0) as (_, env):
        wall, cpu, code, _ = batchgen(env, work, n, 10000, 64, "--poll-interval", "0.02")
    assert code == 0, f"batchgen exited {code}"  # a refused run would report a figure for nothing
    return (
        f"| CPU per task, N={n}, J=0 | {cpu / n * 1000:.2f} ms | wall {wall:.1f} s, {n / wall:.0f} tasks/s, exit {code}"
    )


def cpu_pairs(work: Path, n: int = 300, m: int = 64, job: float = 1.0, pairs: int = 6) -> str:
    """CPU per task of batchgen and the naive client with no rate limit in the way, run in
    alternating pairs (each on a fresh simulator), medians reported."""
    ratios, ours, naive = [], [], []
    for i in range(pairs):
        runs = {}
        for who in ("ours", "naive") if i % 2 == 0 else ("naive", "ours"):
            if who == "naive":
                runs[who] = _naive(work, n, m, job)
            else:
                with simulator(job) as (_, env):
                    runs[who] = batchgen(env, work, n, 100, m)
        assert runs["ours"][2] == 0 and runs["naive"][2] == 0, runs
        ours.append(runs["ours"][1] / n)
        naive.append(runs["naive"][1] / n)
        ratios.append(ours[-1] / naive[-1])
    return (
        f"| CPU per task, N={n}, M={m}, J={job:g} s, no rate limit | batchgen {statistics.median(ours) * 1000:.2f} ms, "
        f"naive {statistics.median(naive) * 1000:.2f} ms: {statistics.median(ratios):.2f}x "
        f"| medians of {pairs} alternating pairs, {min(ratios):.2f}x to {max(ratios):.2f}x"
    )


def scale(work: Path, n: int) -> list[str]:
    rows = []
    csv = work / "rows.csv"
    csv.write_text("name,prompt,duration\n" + "".join(f't{i},"prompt {i}, calm",{1 + i % 30}\n' for i in range(n)))
    big = work / "big.yaml"
    big.write_text("batch: big\nseed: 1\ntracks_file: rows.csv\n")
    wall, _, code, _ = child([PY, "-m", "batchgen", "validate", str(big)], dict(os.environ))
    rows.append(f"| validate, {n:,} tasks | {wall:.2f} s | exit {code}")
    # A journal of n done tasks, written the way the runner writes it.
    sys.path.insert(0, str(ROOT))
    from batchgen.manifest import expand, load

    tasks = expand(load(big))
    journal = work / "out" / "big" / ".batchgen" / "state.jsonl"
    journal.parent.mkdir(parents=True)
    with journal.open("w") as fh:
        fh.write('{"ev":"batch","v":1,"batch":"big","base_seed":null}\n')
        for i, t in enumerate(tasks):
            fh.write(f'{{"ev":"intent","t":1.0,"task":"{t.name}","digest":"{t.digest}","attempt":1}}\n')
            fh.write(f'{{"ev":"submitted","t":1.1,"task":"{t.name}","job_id":"job_{i}","cost":5.0}}\n')
            fh.write(
                f'{{"ev":"succeeded","t":2.0,"task":"{t.name}","job_id":"job_{i}","asset_ids":["asset_{i}"],"cost":5.0}}\n'
            )
            fh.write(
                f'{{"ev":"done","t":2.1,"task":"{t.name}","digest":"{t.digest}","files":[{{"path":"{t.name}.wav","bytes":1,"sha256":"x"}}],"cost":5.0}}\n'
            )
    wall, _, code, _ = child([PY, "-m", "batchgen", "status", str(big), "--out", str(work / "out")], dict(os.environ))
    rows.append(
        f"| status, journal of {n:,} done tasks ({journal.stat().st_size / 1e6:.0f} MB) | {wall:.2f} s | exit {code}"
    )
    # Peak memory of a run with n tasks queued: start it, let it get going, stop it.
    big2 = work / "queued.yaml"
    big2.write_text("batch: queued\nseed: 1\ntracks_file: rows.csv\n")
    with simulator(5.0) as (_, env):
        proc = subprocess.Popen(
            [PY, "-m", "batchgen", "run", str(big2), "--out", str(work / "out2"), "-q", "--rate", "50", "--yes"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak = 0
        deadline = time.monotonic() + 25
        submitted = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
            journal2 = work / "out2" / "queued" / ".batchgen" / "state.jsonl"
            submitted = journal2.read_text().count('"submitted"') if journal2.exists() else 0
            if submitted >= 200:
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    rows.append(
        f"| peak RSS of run, {n:,} tasks queued ({submitted} submitted when sampled) "
        f"| {peak / 1024:.0f} MB | exit {proc.returncode}"
    )
    return rows


def stitch_cpu(work: Path) -> list[str]:
    """CPU seconds to stitch one minute of stereo audio (32 kHz, 16-bit, as MusicGen makes it)
    from three 30 s hops with a 10 s context, and to close a one-minute loop."""
    sys.path.insert(0, str(ROOT))
    from batchgen.audio.stitch import HopFile, close_loop, stitch
    from batchgen.audio.wavfile import WavInfo, header, read_info
    from batchgen.core.chain import Loop
    from batchgen.simulator.audio import render

    info = WavInfo(2, 32000, 16, False, 44, 0)

    def at_32k(data: bytes) -> bytes:  # the simulator's 16 kHz audio, each frame twice
        body = data[44:]
        return b"".join(body[i : i + 4] * 2 for i in range(0, len(body), 4))

    rows = []
    for repeated in (True, False):
        hops, prev = [], b""
        for k in (1, 2, 3):
            new = at_32k(render("battle, 140 bpm", k, 30.0 if k == 1 else 20.0, 2))
            body = (prev[-10 * 32000 * 4 :] if repeated and prev else b"") + new
            path = work / f"hop{k}.wav"
            path.write_bytes(header(info, len(body) // 4) + body)
            hops.append(HopFile(path, 10.0 if k > 1 else 0.0))
            prev = body
        times = []
        for _ in range(5):
            c0 = time.process_time()
            stitch(hops, work / "minute.wav", 60.0, 0.05)
            times.append(time.process_time() - c0)
        assert read_info(work / "minute.wav").frames == 60 * 32000
        case = "prompt repeated (dropped)" if repeated else "new audio only (joined whole)"
        rows.append(
            f"| stitch one minute of stereo audio, 32 kHz 16-bit, 3 hops, {case} "
            f"| {sorted(times)[2]:.3f} CPU s (median of 5) | {60 / sorted(times)[2]:.0f}x real time"
        )
    times = []
    for _ in range(5):
        c0 = time.process_time()
        close_loop(work / "minute.wav", work / "loop.wav", Loop(120, 29), 0.05)
        times.append(time.process_time() - c0)
    median = sorted(times)[2]
    rows.append(f"| close a 58 s loop (29 bars at 120 bpm), same audio | {median:.3f} CPU s (median of 5) | |")
    return rows


def download_memory(size_mb: int) -> str:
    """Peak RSS growth while download_asset streams a size_mb WAV (measured in a child)."""
    out = subprocess.run([PY, __file__, "--download-child", str(size_mb)], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or out.stderr.strip()[-500:]


async def _download_child(size_mb: int) -> None:
    from aiohttp import web

    sys.path.insert(0, str(ROOT))
    from batchgen.core.retry import Backoff
    from batchgen.run.download import Limits, download_asset
    from batchgen.scenario.auth import Credentials
    from batchgen.scenario.client import ScenarioClient
    from batchgen.scenario.models import Asset

    data_bytes = size_mb * 1024 * 1024
    header = b"RIFF" + (36 + data_bytes).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
    header += (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header += b"data" + data_bytes.to_bytes(4, "little")
    chunk = bytes(1024 * 1024)

    async def serve(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        resp.content_length = len(header) + data_bytes
        await resp.prepare(request)
        await resp.write(header)
        for _ in range(size_mb):
            await resp.write(chunk)
        return resp

    app = web.Application()
    app.router.add_get("/big.wav", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as tmp:
        async with ScenarioClient(f"http://127.0.0.1:{port}/v1", Credentials("k", "s")) as client:
            asset = Asset("asset_big", f"http://127.0.0.1:{port}/big.wav", "audio/wav", size=len(header) + data_bytes)
            t0 = time.perf_counter()
            info = await download_asset(
                client,
                asset,
                Path(tmp) / "big",
                refresh=None,  # type: ignore[arg-type]
                limits=Limits(max_bytes=4 << 30),
                policy=Backoff(),
                folder=Path(tmp),
            )
            wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    after = usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    await runner.cleanup()
    growth = (after - before) / 1024
    speed = info.bytes / wall / 1e6
    print(
        f"| download memory, {size_mb} MB asset | +{growth:.1f} MB peak RSS | {speed:.0f} MB/s, "
        f"{cpu / (info.bytes / 1e6) * 1000:.2f} CPU ms per MB (server in-process, its CPU included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--makespan", action="store_true", help="the makespan rows alone")
    parser.add_argument("--others", action="store_true", help="everything but the makespan rows")
    parser.add_argument("--cpu", action="store_true", help="the CPU-per-task pairs and the download rows alone")
    parser.add_argument("--huge", action="store_true", help="the N=10,000, R=100, M=500, J=5 s makespan row alone")
    parser.add_argument("--download-child", type=int)
    args = parser.parse_args()
    if args.download_child:
        asyncio.run(_download_child(args.download_child))
        return
    # Both clients start from bytecode, as an installed package does (PYTHONDONTWRITEBYTECODE
    # would otherwise make every batchgen start compile its modules again).
    compileall.compile_dir(str(ROOT / "batchgen"), quiet=1)
    started = time.monotonic()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.cpu:
            print(cpu_pairs(work, pairs=2 if args.quick else 6), flush=True)
            print(download_memory(50 if args.quick else 500), flush=True)
            return
        print(
            "| scenario | bound | bound with the dry run | batchgen (whole process) | / bound "
            "| schedule / bound with the dry run | rate 429s | naive baseline | batchgen / naive "
            "| CPU per task, batchgen | CPU per task, naive | CPU, batchgen / naive |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        rows: list[str] = []
        split: list[str] = []
        small = 60 if args.quick else 300
        if args.huge:
            makespan(10_000, 100, 500, 5.0, work, rows)
            return
        if not args.others:
            makespan(small, 20, 32, 2.0, work, rows, pairs=1 if args.quick else 5, split=split)
            makespan(small, 20, 32, 1.0, work, rows)
            if not args.quick:
                makespan(2000, 50, 200, 5.0, work, rows)
        if args.makespan:
            return
        print()
        print("| measure | figure | notes |")
        print("| --- | --- | --- |")
        for row in split:
            print(row, flush=True)
        print(requests_per_task(50 if args.quick else 200, 20.0, work), flush=True)
        print(cpu_per_task(200 if args.quick else 1000, work), flush=True)
        for row in scale(work, 10_000 if args.quick else 100_000):
            print(row, flush=True)
        print(download_memory(50 if args.quick else 500), flush=True)
        for row in stitch_cpu(work):
            print(row, flush=True)
    print(f"\nbench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

"""Hostile inputs: misbehaving servers, hostile manifests and journals, planted symlinks.

Whatever the input, batchgen ends by itself with one line per problem and the right
exit code: never a traceback, a hang, unbounded memory, a write outside the batch
folder, or a secret on screen or disk.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.core.errors import BatchgenError
from batchgen.core.state import replay
from batchgen.simulator import SimulatorThread

from ..conftest import KEY, SECRET
from ..helpers import ROOT, env_for, run_cli
from ..hostile import MODES, HostileSimulator

pytestmark = pytest.mark.e2e  # hostile servers, manifests and folders, most of them through the CLI

MANIFEST = """\
batch: hostile
seed: 3
defaults: {duration: 1, modelVersion: melody-large}
tracks:
  - {name: one, prompt: "first tune"}
  - {name: two, prompt: "second tune"}
"""
TOKEN = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
FAST = ["--rate", "50", "--poll-interval", "0.05", "--max-wait", "0.1", "--download-timeout", "4", "--job-timeout", "6"]


def _walk(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]


def _hostile_run(mode: str, root: Path) -> tuple[subprocess.CompletedProcess[str], float, HostileSimulator]:
    sim = HostileSimulator(mode, key=KEY, secret=SECRET, job_time=0.05)
    root.mkdir()
    (root / "m.yaml").write_text(MANIFEST)
    with SimulatorThread(sim) as thread:
        started = time.monotonic()
        result = run_cli(["run", str(root / "m.yaml"), "--out", str(root / "out"), *FAST], env_for(thread), timeout=90)
        return result, time.monotonic() - started, sim


@pytest.fixture(scope="module")
def hostile_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess[str], float, Path, HostileSimulator]]:
    """Every misbehaving-server mode, run once (four at a time)."""
    base = tmp_path_factory.mktemp("hostile")

    def one(mode: str) -> tuple[str, tuple[subprocess.CompletedProcess[str], float, Path, HostileSimulator]]:
        result, took, sim = _hostile_run(mode, base / mode)
        return mode, (result, took, base / mode, sim)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, MODES))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_misbehaving_server_never_breaks_the_run(hostile_runs: dict, mode: str) -> None:  # type: ignore[type-arg]
    """The run ends by itself (exit 0 or 1) with reasons, no traceback, nothing outside the batch
    folder, no secret anywhere, and no task paid for twice."""
    result, took, root, sim = hostile_runs[mode]
    where = f"{mode} ({MODES[mode]}): exit {result.returncode} after {took:.1f}s\n{result.stdout}\n{result.stderr}"
    assert result.returncode in (0, 1), where
    assert "Traceback" not in result.stderr + result.stdout, where
    assert took < 60, where
    outside = [p for p in _walk(root) if p != root / "m.yaml" and root / "out" / "hostile" not in p.parents]
    assert not outside, f"{where}\nwritten outside the batch folder: {outside}"
    for path in _walk(root / "out"):
        text = path.read_bytes()
        assert SECRET.encode() not in text and TOKEN.encode() not in text, f"{where}: secret in {path}"
    for text in (result.stdout, result.stderr):
        assert SECRET not in text and TOKEN not in text, where
    paid: dict[tuple[object, object], int] = {}
    for job in sim.jobs.values():
        if job.kind == "generate":
            key = (job.params.get("prompt"), job.params.get("seed"))
            paid[key] = paid.get(key, 0) + (0 if job.fails and job.refundable else 1)
    # A server that denies the job it just named (404) has, by the API's word, no job: that is
    # a refunded failure, retried under --job-retries (1 by default): bounded, never a loop.
    most = 2 if mode == "other-job" else 1
    assert all(n <= most for n in paid.values()), f"{where}: paid too often: {paid}"
    folder = root / "out" / "hostile"
    for wav in folder.glob("*.wav"):
        assert wav.read_bytes()[:4] == b"RIFF", f"{where}: {wav} is not audio"
    assert not list(folder.glob("*.part")), where


@pytest.mark.parametrize("mode", ["surrogate-reason", "surrogate-details"])
def test_broken_unicode_from_the_api_never_breaks_a_command(hostile_runs: dict, mode: str) -> None:  # type: ignore[type-arg]
    """A lone surrogate in a failure reason or a cost-detail key is cleaned as it enters: the run, a
    rerun, status and report all end with no traceback, and what they wrote is valid UTF-8."""
    result, _, root, _ = hostile_runs[mode]
    manifest, out = str(root / "m.yaml"), str(root / "out")
    with SimulatorThread(HostileSimulator(mode, key=KEY, secret=SECRET, job_time=0.05)) as thread:
        rerun = run_cli(["run", manifest, "--out", out, *FAST], env_for(thread), timeout=90)
    status = run_cli(["status", manifest, "--out", out], env_for(None))
    page = run_cli(["report", manifest, "--out", out], env_for(None))
    for done in (result, rerun, status, page):
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    if mode == "surrogate-details":
        assert result.returncode == 0 and rerun.returncode == 0, result.stdout + result.stderr
    else:
        assert "\ufffd" in status.stdout or "failed" in status.stdout
    for path in _walk(root / "out"):
        if path.suffix in (".json", ".jsonl", ".html", ".csv"):
            path.read_bytes().decode("utf-8")  # every text we wrote is UTF-8: no surrogate reached one


def test_answers_that_merely_lie_about_their_shape_still_give_a_finished_batch(hostile_runs: dict) -> None:  # type: ignore[type-arg]
    """Odd types in fields batchgen can do without (progress, times, cost as text) do not stop a batch."""
    for mode in ("progress-text", "created-number", "cost-text", "generate-list", "generate-no-job"):
        result = hostile_runs[mode][0]
        assert result.returncode == 0, f"{mode}: {result.stdout}{result.stderr}"


MANIFESTS = {
    "alias bomb": "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "batch: x\ntracks: *h\n",
    "bomb in an error": "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "batch: x\ntracks:\n  - {name: a, prompt: *d}\n",
    "deep flow": "batch: x\ntracks: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "deep block": "batch: x\ntracks:\n" + "- " * 20_000 + "x\n",
    "huge width": "batch: x\nfilename: '{take:0>999999999}'\ntracks:\n  - {name: a, prompt: p}\n",
    "nested spec": "batch: x\nfilename: '{take:{seed}}'\ntracks:\n  - {name: a, prompt: p}\n",
    "huge int": "batch: x\nseed: " + "9" * 6000 + "\ntracks:\n  - {name: a, prompt: p}\n",
    "python tag": "batch: !!python/object/apply:os.system [ls]\ntracks:\n  - {name: a, prompt: p}\n",
    "long value": "batch: " + "x" * 5_000_000 + "\ntracks:\n  - {name: a, prompt: p}\n",
    "two documents": "batch: x\n---\nbatch: y\n",
    "stereo with mbd": "batch: x\ntracks:\n"
    "  - {name: a, prompt: p, modelVersion: stereo-large, multiBandDiffusion: true}\n",
    "colliding names": "batch: x\nfilename: same\ntracks:\n  - {name: a, prompt: p}\n  - {name: b, prompt: q}\n",
    "not utf-8": b"batch: x\xff\xfe\ntracks: []\n",
}


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_a_hostile_manifest_is_one_short_line_and_writes_nothing(tmp_path: Path, name: str) -> None:
    """Bombs, depth, huge widths and numbers, tags: exit 2 in seconds with one short line; no output folder."""
    text = MANIFESTS[name]
    manifest = tmp_path / "m.yaml"
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "batchgen", "run", str(manifest), "--out", str(tmp_path / "out"), "--simulate"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env_for(None),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)),  # 1 GB at most
    )
    assert result.returncode == 2, f"{name}: {result.returncode}\n{result.stderr[-1000:]}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 600, f"{name}: {result.stderr[:1000]}"
    assert time.monotonic() - started < 20, name
    assert not (tmp_path / "out").exists(), f"{name}: something was written"


TRACKS_FILES = {
    "deep.jsonl": "[" * 100_000 + "]" * 100_000 + "\n",
    "deep-value.jsonl": '{"name": "a", "prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
    "big-cell.csv": "name,prompt\na," + "x" * 200_000 + "\n",
    "deep.yaml": "- " + "[" * 100_000 + "]" * 100_000 + "\n",
}


@pytest.mark.parametrize("name", list(TRACKS_FILES))
def test_a_hostile_tracks_file_is_one_line_naming_it(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tracks_file is read like the manifest: nesting past any parser and cells past the csv
    module's limit are one line naming the file, exit 2, never a traceback."""
    from batchgen.cli import main

    (tmp_path / name).write_text(TRACKS_FILES[name])
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"batch: x\ntracks_file: {name}\n")
    assert main(["validate", str(manifest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and len(err[0]) < 600, err


@pytest.mark.parametrize(
    "url",
    ["ftp://x/v1", "http://[::1", "http://x:99999/v1", "http:///v1", "http://a b/v1", "http://me:hunter2@x/v1"],
)
def test_a_base_url_that_cannot_work_is_refused_before_any_request(url: str) -> None:
    """An address every request would fail on is a usage error (exit 2), not a network fault
    retried until the deadlines; a password written into it is never echoed."""
    from batchgen.core.errors import UsageError
    from batchgen.scenario.client import ScenarioClient

    with pytest.raises(UsageError, match="SCENARIO_BASE_URL") as caught:
        ScenarioClient.from_env({"SCENARIO_BASE_URL": url, "SCENARIO_API_KEY": "k", "SCENARIO_API_SECRET": "s"})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "1e9"])
def test_a_bad_simulated_job_time_is_one_line(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """BATCHGEN_SIMULATE_JOB_TIME is checked like a command-line number: one line, exit 2, nothing run."""
    from batchgen.cli import main

    monkeypatch.setenv("BATCHGEN_SIMULATE_JOB_TIME", value)
    manifest = tmp_path / "m.yaml"
    manifest.write_text("batch: x\ntracks:\n  - {name: a, prompt: p, duration: 1}\n")
    assert main(["run", str(manifest), "--out", str(tmp_path / "out"), "--simulate", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "BATCHGEN_SIMULATE_JOB_TIME" in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_small_journal_cannot_ask_for_millions_of_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each intent may announce up to 1,000 hops; past what any batch can hold, intents are
    skipped with their line numbers instead of allocating state for them (here with a low cap)."""
    from batchgen.core import state

    monkeypatch.setattr(state, "MAX_HOPS_HELD", 5000)
    lines = [b'{"ev":"batch","v":1,"batch":"b"}'] + [
        f'{{"ev":"intent","task":"t{i}","digest":"d","attempt":1,"hops":1000}}'.encode() for i in range(10)
    ]
    book = replay(lines)
    assert sum(len(st.hops) for st in book.tasks.values()) <= 5000
    assert len(book.warnings) == 5 and all("more hops than a batch can have" in w for w in book.warnings)


def test_a_pipe_in_place_of_a_take_never_hangs_a_command(tmp_path: Path) -> None:
    """A FIFO where a finished take was (or under a delivered name) would block a plain open for
    ever: every command refuses it or treats the take as missing, and ends with one line."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("batch: f\nseed: 1\ndefaults: {duration: 1}\ntracks:\n  - {name: one, prompt: p}\n")
    out, to = tmp_path / "out", tmp_path / "to"
    env = {**env_for(None), "BATCHGEN_SIMULATE_JOB_TIME": "0.05"}
    assert run_cli(["run", str(manifest), "--out", str(out), "--simulate", "-q"], env).returncode == 0
    to.mkdir()
    os.mkfifo(to / "one.wav")  # under the name deliver is about to write
    result = run_cli(["deliver", str(manifest), "--out", str(out), "--to", str(to), "--all"], env, timeout=30)
    assert result.returncode == 1 and "one.wav" in result.stderr and "Traceback" not in result.stderr
    take = out / "f" / "one.wav"
    take.unlink()
    os.mkfifo(take)  # where the finished take was
    for args, code in (
        (["status", str(manifest), "--out", str(out)], 0),
        (["report", str(manifest), "--out", str(out)], 0),
        (["deliver", str(manifest), "--out", str(out), "--to", str(to), "--all"], 2),  # nothing deliverable
        (["run", str(manifest), "--out", str(out), "--simulate", "-q"], 2),  # refuses to replace it
    ):
        result = run_cli(args, env, timeout=30)
        assert result.returncode == code and "Traceback" not in result.stderr, (args, result.stderr)


@pytest.mark.parametrize("part", ["file:///etc/passwd", "httpx://elsewhere/part", None])
async def test_an_upload_answered_without_an_http_part_url_is_refused(tmp_path: Path, part: str | None) -> None:
    """An upload answered without an http(s) part URL (none, a file: one, a scheme that merely
    starts with "http") is refused as an unusable answer before any byte is sent."""
    import wave

    from aiohttp import web

    from batchgen.core.errors import ApiError
    from batchgen.core.retry import Backoff
    from batchgen.scenario.auth import Credentials
    from batchgen.scenario.client import ScenarioClient
    from batchgen.scenario.uploads import upload_audio
    from batchgen.simulator import Simulator, serve

    sim = Simulator(key=KEY, secret=SECRET, job_time=0.05)

    @web.middleware
    async def no_parts(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "POST" and request.path == "/v1/uploads":
            body = json.loads(response.body)
            body["upload"]["parts"] = [{"url": part, "number": 1}] if part else []
            return web.json_response(body, status=response.status)
        return response

    sim.app.middlewares.insert(0, no_parts)
    melody = tmp_path / "m.wav"
    with wave.open(str(melody), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\0" * 1600)
    async with serve(sim) as url, ScenarioClient(url, Credentials(KEY, SECRET)) as client:
        with pytest.raises(ApiError, match="no part URL"):
            await upload_audio(client, melody, policy=Backoff(attempts=2, base=0.01))


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_manifest_or_tracks_file_that_is_not_a_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A FIFO, a folder or a device as manifest or tracks_file: one line, exit 2, no hang."""
    special = tmp_path / "rows.csv"
    if kind == "fifo":
        os.mkfifo(special)
    elif kind == "folder":
        special.mkdir()
    else:
        special = Path("/dev/zero")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"batch: x\ntracks_file: {special}\n")
    for target in (special, manifest):
        result = run_cli(["validate", str(target)], env_for(None), timeout=20)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "regular file" in result.stderr or "folder" in result.stderr, result.stderr


def test_input_audio_must_be_an_audio_file(tmp_path: Path) -> None:
    """A folder, a text file or a FIFO given as inputAudio is refused with what it is."""
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "dir.wav").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")
    for name, fragment in (("notes.txt", "not an audio file"), ("dir.wav", "folder"), ("pipe.wav", "regular file")):
        (tmp_path / "m.yaml").write_text(f"batch: x\ntracks:\n  - {{name: a, prompt: p, inputAudio: {name}}}\n")
        result = run_cli(["validate", str(tmp_path / "m.yaml")], env_for(None), timeout=20)
        assert result.returncode == 2 and fragment in result.stderr, (name, result.stderr)


def test_yaml_merge_keys_and_csv_columns(tmp_path: Path) -> None:
    """`<<: *base` with an override is allowed; a CSV naming a column twice is refused."""
    from batchgen import ManifestError, expand, load

    (tmp_path / "m.yaml").write_text(
        "batch: x\nseed: 1\nbase: &base {prompt: p, duration: 4}\n".replace("base: &base", "defaults: &base")
        + "tracks:\n  - {<<: *base, name: a, duration: 6}\n"
    )
    tasks = expand(load(tmp_path / "m.yaml"))
    assert tasks[0].params["duration"] == 6 and tasks[0].params["prompt"] == "p"
    (tmp_path / "rows.csv").write_text("name,prompt,prompt\na,x,y\n")
    (tmp_path / "m2.yaml").write_text("batch: x\ntracks_file: rows.csv\n")
    with pytest.raises(ManifestError, match="twice"):
        load(tmp_path / "m2.yaml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_the_manifest_reader_returns_or_raises_one_line_for_any_bytes(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    """Arbitrary bytes as a manifest: a manifest, or batchgen's one-line error; nothing else."""
    from batchgen import expand, load

    path = tmp_path_factory.mktemp("fuzz") / "m.yaml"
    path.write_bytes(data)
    try:
        expand(load(path), 1)
    except BatchgenError as err:
        assert "\n" not in str(err) and len(str(err)) < 1000


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    doc=st.dictionaries(
        st.sampled_from(["batch", "tracks", "defaults", "sweep", "zip", "seed", "takes", "filename", "x"]),
        yaml_values,
        max_size=6,
    )
)
def test_the_manifest_reader_survives_any_structure(tmp_path_factory: pytest.TempPathFactory, doc: dict) -> None:  # type: ignore[type-arg]
    """Any YAML structure with manifest-like keys: a manifest or a one-line error."""
    import yaml

    from batchgen import expand, load

    path = tmp_path_factory.mktemp("fuzz") / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        expand(load(path), 1)
    except BatchgenError as err:
        assert "\n" not in str(err) and len(str(err)) < 1000


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.binary(max_size=300) | st.builds(lambda d: __import__("json").dumps(d).encode(), yaml_values), max_size=30
    )
)
def test_journal_replay_returns_or_refuses_for_any_lines(lines: list[bytes]) -> None:
    """Arbitrary lines as a journal: a book (bad lines skipped with warnings) or the one refusal."""
    try:
        book = replay(lines)
    except BatchgenError as err:
        assert "newer" in str(err)
        return
    assert len(book.warnings) <= len(lines)


@pytest.mark.parametrize(
    "line",
    [
        b"\xff\xfe not utf-8",
        b'{"ev":"batch","v":null,"batch":"b"}',
        b'{"ev":"batch","v":"1","batch":"b"}',
        b'{"ev":"upload","asset_id":"asset_1"}',
        b'{"ev":"submitted","task":"a"}',
        b'{"ev":"succeeded","task":"a","job_id":"job_1","asset_ids":["a"],"cost":"1"}',
        b'{"ev":"done","task":"a","files":[{"bytes":1,"sha256":"x"}]}',
        b'{"ev":"done","task":"a","files":[{"path":"../../etc/passwd","bytes":1,"sha256":"x"}]}',
        b'{"ev":"submitted","task":"../x","job_id":"job_1"}',
        b'{"ev":"submitted","task":"a","job_id":"../../x"}',
        b'{"ev":"succeeded","task":"a","job_id":"job_1","asset_ids":["a"],"cost":NaN}',
        b'{"ev":"kept","task":"a","state":{"hops":[]}}',
        b'{"ev":"kept","task":"a","state":{"hops":[{"status":"done"}],"charges":{"job_9":-1}}}',
        b'{"ev":"kept","task":"a","state":{"hops":[{"status":"done","file":{"path":"../x","bytes":1,"sha256":"s"}}]}}',
        b'{"ev":"kept","task":"b","state":{"hops":[{"status":"done"}],"job_ids":["job_1"]}}',  # a's job
        b"[" * 50_000,
    ],
)
def test_a_bad_journal_line_is_skipped_and_a_done_task_is_kept(line: bytes) -> None:
    """Every malformed field of every event: the line is skipped with its number; what came before stands."""
    good = [
        b'{"ev":"batch","v":1,"batch":"b","base_seed":3}',
        b'{"ev":"intent","task":"a","digest":"d","attempt":1,"t":1}',
        b'{"ev":"submitted","task":"a","job_id":"job_1","cost":2}',
        b'{"ev":"succeeded","task":"a","job_id":"job_1","asset_ids":["asset_1"],"cost":2}',
        b'{"ev":"done","task":"a","digest":"d","files":[{"path":"a.wav","bytes":9,"sha256":"s"}],"cost":2}',
    ]
    book = replay([*good, line], "j")
    assert book.tasks["a"].status.value == "done" and book.spent == 2
    assert book.warnings and book.warnings[0].startswith("j:6:")


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A finished batch and a file outside it that planted symlinks point at."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    yield tmp_path, victim


SYMLINKS = [
    "one.wav.part",
    "one.json.part",
    "one.wav",
    "one.json",
    "index.html.part",
    "index.html",
    ".batchgen/lock",
    ".batchgen/state.jsonl",
    ".batchgen/prices.json",
    ".batchgen/prices.json.part",
    ".batchgen",
]


@pytest.mark.parametrize("name", SYMLINKS)
def test_batchgen_never_writes_through_a_planted_symlink(planted: tuple[Path, Path], name: str) -> None:
    """Every file batchgen creates or replaces, planted as a symlink: the target is untouched and the
    run refuses with the path named (or simply never touches that name)."""
    root, victim = planted
    (root / "m.yaml").write_text(MANIFEST)
    folder = root / "out" / "hostile"
    (folder / ".batchgen").mkdir(parents=True)
    link = folder / name
    if link.exists() or link.is_symlink():
        link.unlink() if not link.is_dir() else link.rmdir()
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim if name != ".batchgen" else root, link)
    result = run_cli(
        [
            "run",
            str(root / "m.yaml"),
            "--out",
            str(root / "out"),
            "--simulate",
            "--rate",
            "50",
            "--poll-interval",
            "0.05",
        ],
        env_for(None, BATCHGEN_SIMULATE_JOB_TIME="0.05"),
        timeout=60,
    )
    assert victim.read_text() == "precious", f"{name}: written through\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2), result.stderr
    if result.returncode != 0:
        assert str(link) in result.stderr or name.split("/")[-1] in result.stderr, result.stderr
    for path in folder.glob("*"):
        if path.suffix in (".wav", ".json", ".html"):
            assert not path.is_symlink() or path == link, f"{path} is a symlink batchgen made"


@pytest.mark.parametrize("damage", ["batch folder is a file", "journal is a folder", "journal is a fifo"])
@pytest.mark.parametrize("command", ["status", "plan", "report", "run"])
def test_a_damaged_batch_folder_is_one_line_for_every_command(tmp_path: Path, damage: str, command: str) -> None:
    """status, plan, report and run on a batch folder that is a file, or a journal that is a folder or
    a FIFO: one line naming the path, exit 2, no hang."""
    (tmp_path / "m.yaml").write_text(MANIFEST)
    folder = tmp_path / "out" / "hostile"
    if damage == "batch folder is a file":
        folder.parent.mkdir()
        folder.write_text("not a folder")
    else:
        (folder / ".batchgen").mkdir(parents=True)
        journal = folder / ".batchgen" / "state.jsonl"
        journal.mkdir() if damage == "journal is a folder" else os.mkfifo(journal)
    result = run_cli(
        [command, str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--simulate"][
            : 5 if command in ("run", "plan") else 4
        ],
        env_for(None),
        timeout=30,
    )
    assert result.returncode == 2, (damage, command, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "hostile" in result.stderr, result.stderr

"""`batchgen deliver`: a BS.1770 meter held to EBU Tech 3341, levelled and tagged files, idempotent reruns."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from batchgen import load
from batchgen.audio.loudness import integrated_loudness, measure, true_peak
from batchgen.audio.mastering import MasteringError, Settings, master
from batchgen.audio.tags import Tags
from batchgen.listen.deliver import DeliverError, Options, deliver
from batchgen.listen.picks import Made, change, save
from batchgen.listen.picks import load as load_picks

from ..conftest import Served
from ..helpers import ROOT, fast, requires, run

FFPROBE = shutil.which("ffprobe")
FFMPEG = shutil.which("ffmpeg")

MANIFEST = """\
batch: lib
seed: 8
defaults: {duration: 3}
tracks:
  - {name: theme, prompt: "=HYPERLINK(1) main theme, warm strings, 90 bpm", takes: 2}
  - {name: battle, prompt: "epic battle, taiko drums, 140 bpm", takes: 2}
  - {name: sting, prompt: "victory sting, brass, 120 bpm"}
"""


async def tool(*args: str) -> subprocess.CompletedProcess[str]:
    """A command-line tool's answer, run off the event loop."""
    return await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=60)


def sine(db: float, seconds: float, rate: int = 48000, freq: float = 1000.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.repeat((10 ** (db / 20) * np.sin(2 * np.pi * freq * t + phase))[:, None], 2, axis=1)


@pytest.mark.parametrize("rate", [48000, 44100, 32000])
@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([(-23, 20)], -23.0),  # Tech 3341 case 1
        ([(-33, 20)], -33.0),  # case 2
        ([(-36, 10), (-23, 60), (-36, 10)], -23.0),  # case 3: the relative gate
        ([(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)], -23.0),  # case 4: both gates
        ([(-26, 20), (-20, 20.1), (-26, 20)], -23.0),  # case 5
    ],
)
def test_the_meter_reads_ebu_tech_3341_cases(parts: list[tuple[float, float]], expected: float, rate: int) -> None:
    """1 kHz stereo sines at the levels of EBU Tech 3341's cases read their loudness within 0.1 LU."""
    audio = np.concatenate([sine(db, seconds, rate) for db, seconds in parts])
    assert integrated_loudness(audio, rate) == pytest.approx(expected, abs=0.1)


def test_true_peak_finds_the_peak_between_samples() -> None:
    """A 12 kHz sine at 48 kHz sampled 45 degrees off its crest: samples 3 dB low, the true peak
    within Tech 3341's +0.2/-0.4 dB of the real one; silence is -inf."""
    audio = sine(-6.0206, 2, 48000, 12000, math.pi / 4)
    assert 20 * math.log10(np.abs(audio).max()) == pytest.approx(-9.03, abs=0.01)
    assert -6.0206 - 0.4 <= true_peak(audio) <= -6.0206 + 0.2
    assert true_peak(sine(-6.0206, 2, 48000)) == pytest.approx(-6.02, abs=0.05)
    assert measure(np.zeros((48000, 2)), 48000).integrated == -math.inf


def synthetic(kind: str, rate: int = 32000) -> np.ndarray:
    rng = np.random.default_rng(3)
    t = np.arange(8 * rate) / rate
    if kind == "quiet":  # -45 LUFS with sparse clicks: raising it to the target needs the limiter
        x = np.repeat((0.004 * np.sin(2 * np.pi * 220 * t))[:, None], 2, axis=1)
        x[:: rate // 2] = 0.25
        return x
    if kind == "loud":  # a dense, heavily compressed bed
        return np.clip(rng.normal(0, 0.45, (len(t), 2)), -1, 1)
    return np.repeat(np.clip(1.7 * np.sin(2 * np.pi * 110 * t), -1, 1)[:, None], 2, axis=1)  # clipping


@pytest.mark.parametrize("kind", ["quiet", "loud", "clipping"])
@pytest.mark.parametrize(("target", "ceiling"), [(-14.0, -1.0), (-23.0, -1.0), (-16.0, -2.0)])
def test_mastering_lands_on_the_target_under_the_ceiling(
    tmp_path: Path, kind: str, target: float, ceiling: float
) -> None:
    """Quiet, loud and clipping inputs come out within 0.5 LU of the target, true peak at or under
    the ceiling, measured on the written file."""
    source = tmp_path / f"{kind}.wav"
    sf.write(source, synthetic(kind), 32000, subtype="PCM_16")
    tags = Tags("t", "p", "batchgen test", "2026-11-27", "10:00:00")
    made = master(source, Settings(target, ceiling, None, "wav"), tags, seed=1)
    data, measured = made.data, made.measured
    (tmp_path / "out.wav").write_bytes(data)
    audio, rate = sf.read(tmp_path / "out.wav", always_2d=True)
    check = measure(audio, rate)
    assert check.integrated == pytest.approx(target, abs=0.5), (kind, check)
    assert check.true_peak <= ceiling, (kind, check)
    assert measured["integratedLufs"] == pytest.approx(check.integrated, abs=0.01)


TAGS = Tags("t", "p", "batchgen test", "2026-11-27", "10:00:00")


@pytest.mark.parametrize(
    ("audio", "subtype", "refusal"),
    [
        (np.zeros((0, 2)), "PCM_16", "holds no audio (0 frames)"),
        (np.full((48000, 2), np.nan), "FLOAT", "not numbers (NaN or infinite)"),
        (np.vstack([sine(-20, 1), np.full((24000, 2), np.inf), sine(-20, 1)]), "FLOAT", "NaN or infinite"),
        (sine(-80, 2), "PCM_16", "is near silent"),
        (np.zeros((96000, 2)), "PCM_16", "is near silent (silent)"),
    ],
    ids=["zero frames", "NaN", "inf", "near silent", "silence"],
)
def test_takes_that_cannot_be_levelled_are_refused_in_one_line(
    tmp_path: Path, audio: np.ndarray, subtype: str, refusal: str
) -> None:
    """A take with no audio, with samples that are not numbers, too short to be gated or silent is
    refused with a one-line reason naming it, never a traceback or a silently missed target."""
    source = tmp_path / "take.wav"
    sf.write(source, audio, 48000, subtype=subtype)
    with pytest.raises(MasteringError, match=re.escape(refusal)) as refused:
        master(source, Settings(-16.0, -1.0, None, "wav"), TAGS, seed=1)
    assert "take.wav" in str(refused.value) and "\n" not in str(refused.value)


def test_a_dc_offset_does_not_keep_a_take_from_its_target(tmp_path: Path) -> None:
    """A take riding on a large DC offset is delivered at its target by our meter and ffmpeg's."""
    source = tmp_path / "dc.wav"
    sf.write(source, sine(-26, 10) + 0.4, 48000, subtype="FLOAT")
    made = master(source, Settings(-16.0, -1.0, None, "wav"), TAGS, seed=1)
    data, measured = made.data, made.measured
    assert measured["integratedLufs"] == pytest.approx(-16.0, abs=0.5)
    out = tmp_path / "out.wav"
    out.write_bytes(data)
    audio, rate = sf.read(out, always_2d=True)
    assert measure(audio, rate).integrated == pytest.approx(measured["integratedLufs"], abs=0.05)
    if FFMPEG or os.environ.get("BATCHGEN_REQUIRE_TOOLS"):
        assert ffmpeg_integrated(out) == pytest.approx(-16.0, abs=0.5)


def test_a_sample_rate_that_would_need_gigabytes_is_refused_before_decoding(tmp_path: Path) -> None:
    """What a take becomes counts against the memory bound, not only its length: 10 minutes at
    --sample-rate 384000 is refused at once, naming the take; at 48 kHz it would be allowed."""
    source = tmp_path / "long.wav"
    with sf.SoundFile(source, "w", 8000, 2, subtype="PCM_16") as fh:
        fh.write(np.zeros((600 * 8000, 2), dtype=np.int16))
    with pytest.raises(MasteringError, match=r"long\.wav at 384000 Hz would be"):
        master(source, Settings(None, None, 384000, "wav"), TAGS, seed=1)


def ffmpeg_integrated(path: Path) -> float:
    """ffmpeg's ebur128 filter's integrated loudness of a file."""
    out = subprocess.run(
        ["ffmpeg", "-nostats", "-i", str(path), "-af", "ebur128", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.findall(r"I:\s+(-?[\d.]+) LUFS", out.stderr)
    assert found, out.stderr[-500:]
    return float(found[-1])


def riff_chunks(data: bytes) -> dict[bytes, bytes]:
    """The top-level chunks of a RIFF/WAVE file."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    chunks, pos = {}, 12
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks[tag] = data[pos + 8 : pos + 8 + size]
        pos += 8 + size + size % 2
    return chunks


def info_fields(chunk: bytes) -> dict[str, str]:
    assert chunk[:4] == b"INFO"
    out, pos = {}, 4
    while pos + 8 <= len(chunk):
        tag, size = chunk[pos : pos + 4].decode(), struct.unpack("<I", chunk[pos + 4 : pos + 8])[0]
        out[tag] = chunk[pos + 8 : pos + 8 + size].rstrip(b"\0").decode()
        pos += 8 + size + size % 2
    return out


def pick(folder: Path, names: list[str], *, multi: bool = False) -> None:
    picks = load_picks(folder, "lib")
    for name in names:
        digest, sha = "", ""
        for line in (folder / ".batchgen" / "state.jsonl").read_text().splitlines():
            ev = json.loads(line)
            if ev.get("ev") == "done" and ev.get("task") == name:
                digest, sha = ev["digest"], ev["files"][0]["sha256"]
        change(picks, name, Made(name.split("-t")[0], digest, sha), "pick", multi=multi, now=1.0)
    save(folder, picks)


async def test_deliver_picks_levels_tags_and_reruns_write_nothing(served: Served, tmp_path: Path) -> None:
    """The picked take of a track becomes DIR/<track>.wav at the loudness asked, tagged (LIST/INFO
    and bext), listed in delivery.json/.csv; a rerun writes nothing; --fill and --all add the rest."""
    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    folder, to = tmp_path / "out" / "lib", tmp_path / "delivery"
    pick(folder, ["theme-t2"])
    said: list[str] = []
    outcome = deliver(load(manifest), tmp_path / "out", Options(to, loudness=-16.0), said.append)
    assert outcome.written == ["theme.wav"] and not outcome.problems
    data = (to / "theme.wav").read_bytes()
    chunks = riff_chunks(data)
    info = info_fields(chunks[b"LIST"])
    assert (
        info["INAM"] == "theme" and info["ICMT"].startswith("=HYPERLINK(1) main theme") and "batchgen" in info["ISFT"]
    )
    bext = chunks[b"bext"]
    sidecar = json.loads((folder / "theme-t2.json").read_text())
    description = bext[:256].rstrip(b"\0").decode()
    assert f"seed {sidecar['seed']}" in description and f"job {sidecar['jobId']}" in description
    assert bext[256:288].rstrip(b"\0") == b"batchgen" and struct.unpack("<H", bext[346:348])[0] == 2
    assert struct.unpack("<h", bext[412:414])[0] == pytest.approx(-1600, abs=50)  # LoudnessValue, x100
    audio, rate = sf.read(to / "theme.wav", always_2d=True)
    assert measure(audio, rate).integrated == pytest.approx(-16.0, abs=0.5) and true_peak(audio) <= -1.0
    record = json.loads((to / "delivery.json").read_text())["files"][0]
    assert record["file"] == "theme.wav" and record["take"] == 2 and record["jobId"] == sidecar["jobId"]
    assert record["sha256"] == __import__("hashlib").sha256(data).hexdigest()
    rows = list(csv.DictReader((to / "delivery.csv").open()))
    assert rows[0]["prompt"].startswith("'=HYPERLINK")  # a spreadsheet shows it, never runs it

    stamp = (to / "theme.wav").stat().st_mtime_ns
    again = deliver(load(manifest), tmp_path / "out", Options(to, loudness=-16.0), said.append)
    assert again.written == [] and again.unchanged == ["theme.wav"]
    assert (to / "theme.wav").stat().st_mtime_ns == stamp

    filled = deliver(load(manifest), tmp_path / "out", Options(to, loudness=-16.0, select="fill"), said.append)
    assert sorted(filled.written) == ["battle.wav", "sting.wav"] and filled.unchanged == ["theme.wav"]
    everything = deliver(load(manifest), tmp_path / "out", Options(to, select="all"), said.append)
    assert sorted(everything.written) == ["battle-t1.wav", "battle-t2.wav", "sting.wav", "theme-t1.wav", "theme-t2.wav"]
    assert sorted(everything.removed) == ["battle.wav", "theme.wav"]  # ours, no longer selected
    untouched = sf.read(to / "sting.wav", dtype="int16")[0]
    assert np.array_equal(untouched, sf.read(folder / "sting.wav", dtype="int16")[0])  # no --loudness: bit for bit


async def test_deliver_never_replaces_what_it_did_not_write(served: Served, tmp_path: Path) -> None:
    """A file in DIR that batchgen did not write is refused (exit 1, named) unless --force; a
    symlink planted under a delivered name is never written through."""
    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "delivery"
    to.mkdir()
    (to / "sting.wav").write_bytes(b"the editor's own master")
    outside = tmp_path / "outside.wav"
    outside.write_bytes(b"keep me")
    (to / "battle.wav").symlink_to(outside)
    outcome = deliver(load(manifest), tmp_path / "out", Options(to, select="fill"), lambda _: None)
    assert outcome.written == ["theme.wav"]
    assert {p.split(":")[0] for p in outcome.problems} == {"battle-t1", "sting"}
    assert (to / "sting.wav").read_bytes() == b"the editor's own master" and outside.read_bytes() == b"keep me"
    forced = deliver(load(manifest), tmp_path / "out", Options(to, select="fill", force=True), lambda _: None)
    assert "sting.wav" in forced.written and outside.read_bytes() == b"keep me"
    for inside in (tmp_path / "out" / "lib", tmp_path / "out" / "lib" / ".batchgen"):  # never among the takes
        with pytest.raises(DeliverError, match="in the batch folder"):
            deliver(load(manifest), tmp_path / "out", Options(inside, select="fill", force=True), lambda _: None)
    for foreign in ("{}", "[" * 100_000 + "]" * 100_000):
        (to / "delivery.json").write_text(foreign)
        with pytest.raises(DeliverError, match="not batchgen's"):
            deliver(load(manifest), tmp_path / "out", Options(to, select="fill"), lambda _: None)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


@pytest.mark.parametrize("replacing", [False, True], ids=["new files", "replacing files"])
async def test_a_deliver_killed_between_record_and_file_is_resumed_without_force(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replacing: bool
) -> None:
    """Killed as its third file is about to land (its record written, the file not yet renamed in),
    the rerun recognises every file as its own, needs no --force, and the record lists them all."""
    import batchgen.listen.deliver as module

    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "delivery"
    if replacing:  # an earlier delivery at another level: each file is replaced this time
        deliver(load(manifest), tmp_path / "out", Options(to, select="all"), lambda _: None)
    real, landed = module.files.write_atomic, []

    def dies_on_the_third(path: Path | str, data: bytes, *, durable: bool = True) -> None:
        if str(path).endswith(".wav"):
            if len(landed) == 2:
                raise Killed
            landed.append(path)
        real(path, data, durable=durable)

    monkeypatch.setattr(module.files, "write_atomic", dies_on_the_third)
    with pytest.raises(Killed):
        deliver(load(manifest), tmp_path / "out", Options(to, loudness=-20.0, select="all"), lambda _: None)
    monkeypatch.setattr(module.files, "write_atomic", real)
    again = deliver(load(manifest), tmp_path / "out", Options(to, loudness=-20.0, select="all"), lambda _: None)
    assert not again.problems, again.problems
    assert sorted(again.unchanged) == sorted(Path(p).name for p in landed) and len(again.written) == 3
    record = json.loads((to / "delivery.json").read_text())["files"]
    assert len(record) == 5 and all("replaces" not in r for r in record)
    for entry in record:
        assert hashlib.sha256((to / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]


async def test_two_delivers_into_one_folder_the_second_is_refused(served: Served, tmp_path: Path) -> None:
    """The delivery folder is locked while a deliver writes into it: a second one exits 3, naming it."""
    from batchgen.store.lock import BatchLock

    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "delivery"
    to.mkdir()
    args = ["deliver", str(manifest), "--out", str(tmp_path / "out"), "--to", str(to), "--all"]
    with BatchLock(to / ".batchgen-delivery.lock", "delivery folder", to):
        out = await tool(sys.executable, "-m", "batchgen", *args)
    assert out.returncode == 3 and "delivery folder is locked" in out.stderr, out.stderr
    assert not list(to.glob("*.wav"))


async def test_a_sidecar_of_the_wrong_shape_is_input_like_any_other(served: Served, tmp_path: Path) -> None:
    """Tags come from the sidecar; one edited into nonsense neither crashes deliver nor lands in the file whole."""
    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    folder, to = tmp_path / "out" / "lib", tmp_path / "delivery"
    sidecar = folder / "sting.json"
    size = sidecar.stat().st_size  # kept, so the journal still takes the take as made
    sidecar.write_text("[" * size)  # not JSON (and as deep as a sidecar of its size can nest)
    outcome = deliver(load(manifest), tmp_path / "out", Options(to, select="fill"), lambda _: None)
    assert "sting.wav" in outcome.written and any("unreadable sidecar" in w for w in outcome.warnings)
    hostile = json.dumps({"timings": ["not", "a", "map"], "seed": "7", "track": {"x": 1}, "jobId": None})
    sidecar.write_text(hostile.ljust(size))
    (to / "sting.wav").unlink()
    outcome = deliver(load(manifest), tmp_path / "out", Options(to, select="fill", force=True), lambda _: None)
    assert "sting.wav" in outcome.written and not outcome.problems
    chunks = riff_chunks((to / "sting.wav").read_bytes())
    assert b"seed 7" not in chunks[b"bext"]  # a seed given as text is no seed
    assert info_fields(chunks[b"LIST"])["INAM"] == "sting"  # a title that is not text: the manifest's


async def test_a_delivery_record_never_names_a_file_outside_the_folder(served: Served, tmp_path: Path) -> None:
    """delivery.json is input too: entries that are not plain names in DIR are never removed or opened."""
    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "delivery"
    deliver(load(manifest), tmp_path / "out", Options(to, select="fill"), lambda _: None)
    outside = tmp_path / "outside.wav"
    outside.write_bytes(b"keep me")
    sha = __import__("hashlib").sha256(b"keep me").hexdigest()
    doc = json.loads((to / "delivery.json").read_text())
    doc["files"] += [{"file": name, "sha256": sha} for name in ("../outside.wav", "a\0b.wav", "", ".hidden")]
    (to / "delivery.json").write_text(json.dumps(doc))
    again = deliver(load(manifest), tmp_path / "out", Options(to, select="fill"), lambda _: None)
    assert again.removed == [] and outside.read_bytes() == b"keep me"
    assert sorted(again.unchanged) == ["battle.wav", "sting.wav", "theme.wav"]


async def test_flac_and_resampling_keep_level_and_tags(served: Served, tmp_path: Path) -> None:
    """--format flac writes Vorbis comments; --sample-rate resamples with the length and loudness kept."""
    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "delivery"
    options = Options(to, loudness=-14.0, fmt="flac", sample_rate=48000, select="fill")
    outcome = deliver(load(manifest), tmp_path / "out", options, lambda _: None)
    assert sorted(outcome.written) == ["battle.flac", "sting.flac", "theme.flac"]
    with sf.SoundFile(to / "sting.flac") as f:
        assert f.samplerate == 48000 and f.frames == 3 * 48000 and f.title == "sting"
        assert "victory sting" in f.comment
    audio, rate = sf.read(to / "sting.flac", always_2d=True)
    assert measure(audio, rate).integrated == pytest.approx(-14.0, abs=0.5) and true_peak(audio) <= -1.0
    if FFPROBE:
        probe = await tool(FFPROBE, "-v", "error", "-show_format", "-of", "json", str(to / "sting.flac"))
        tags = {k.upper(): v for k, v in json.loads(probe.stdout)["format"]["tags"].items()}
        assert tags["TITLE"] == "sting" and tags["MODEL"] == "model_meta-musicgen" and tags["SEED"].isdigit()


@requires(FFPROBE and FFMPEG, "ffmpeg")
async def test_standard_tools_read_the_tags_and_agree_on_the_level(served: Served, tmp_path: Path) -> None:
    """ffprobe reads the WAV's INFO and bext fields; ffmpeg's own EBU R128 meter reads the loudness
    we wrote within 0.5 LU, and its true peak at or under the ceiling (an independent check)."""
    manifest = tmp_path / "lib.yaml"
    manifest.write_text(MANIFEST)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "delivery"
    deliver(load(manifest), tmp_path / "out", Options(to, loudness=-14.0, select="fill"), lambda _: None)
    assert FFPROBE is not None and FFMPEG is not None
    probe = await tool(FFPROBE, "-v", "error", "-show_format", "-of", "json", str(to / "battle.wav"))
    tags = json.loads(probe.stdout)["format"]["tags"]
    assert tags["title"] == "battle" and tags["encoded_by"] == "batchgen" and tags["encoder"].startswith("batchgen")
    assert "epic battle" in tags["comment"] and "| seed " in tags["comment"]
    meter = (
        await tool(FFMPEG, "-nostats", "-i", str(to / "battle.wav"), "-af", "ebur128=peak=true", "-f", "null", "-")
    ).stderr
    summary = meter[meter.rindex("Summary:") :]
    lufs = float(summary.split("I:")[1].split("LUFS")[0])
    peak = float(summary.split("Peak:")[1].split("dBFS")[0])
    assert lufs == pytest.approx(-14.0, abs=0.5) and peak <= -1.0 + 0.1, summary


def test_without_the_extra_deliver_says_what_to_install(tmp_path: Path) -> None:
    """Without numpy (the deliver extra), deliver is one line naming what to install, exit 2."""
    code = (
        "import sys; sys.modules['numpy'] = None; from batchgen.cli import main; "
        f"raise SystemExit(main(['deliver', 'manifests/demo.yaml', '--to', {str(tmp_path)!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "pip install 'batchgen[deliver]'" in out.stderr and "Traceback" not in out.stderr

"""Delivery that engines import as is: Ogg Vorbis, Opus and MP3, loop points read back by independent
readers, lengths exact in samples, presets' loudness by ffmpeg's meter, short clips, seamless loops."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from batchgen import load
from batchgen.audio import ogg
from batchgen.audio.mastering import MasteringError, Settings, master
from batchgen.audio.presets import LEVELS
from batchgen.audio.tags import Tags
from batchgen.listen.deliver import Options, deliver

from ..conftest import Served
from ..helpers import fast, requires, run

FFPROBE, FFMPEG, SNDFILE_INFO = shutil.which("ffprobe"), shutil.which("ffmpeg"), shutil.which("sndfile-info")
TAGS = Tags("theme", "a warm theme", "batchgen test", "2026-12-07", "10:00:00", seed=7, model="m", job_id="job_1")
RATE = 44100


def loop_source(tmp_path: Path, seconds: float = 2.0, rate: int = RATE) -> Path:
    """A loop that is continuous around its circle (whole cycles of a tone), with a loud hit 4 ms
    after the seam that the limiter must hold down: a limiter that ignores the circle turns the
    gain down after the seam but not before it, and leaves a step there."""
    n = round(seconds * rate)
    frames = np.arange(n)
    tone = 0.3 * np.sin(2 * np.pi * (round(110 * seconds) / seconds) * frames / rate)
    around = (frames - round(0.004 * rate) + n // 2) % n - n // 2  # frames from the hit, round the circle
    hit = 0.95 * np.exp(-((around / (0.003 * rate)) ** 2)) * np.sin(2 * np.pi * 1000 * around / rate)
    path = tmp_path / "loop.wav"
    sf.write(path, np.stack([tone + hit, tone], axis=1), rate, subtype="FLOAT")
    return path


def seam_step(audio: np.ndarray) -> tuple[float, float]:
    """The curvature (second difference) across the seam, and the largest in the 8 frames either side."""
    circle = np.concatenate([audio[-2:], audio[:2]])
    seam = np.abs(np.diff(circle, 2, axis=0)).max()
    before, after = np.diff(audio[-10:-1], 2, axis=0), np.diff(audio[1:10], 2, axis=0)
    return float(seam), float(max(np.abs(before).max(), np.abs(after).max()))


def probe_tags(path: Path) -> dict[str, str]:
    assert FFPROBE is not None
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "stream_tags:format_tags", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = json.loads(out)
    found: dict[str, str] = {}
    for part in [doc.get("format", {}), *doc.get("streams", [])]:
        found.update({k.upper(): v for k, v in part.get("tags", {}).items()})
    return found


def ebur128(path: Path) -> tuple[float, float]:
    """ffmpeg's integrated loudness and true peak of a file."""
    assert FFMPEG is not None
    meter = subprocess.run(
        [FFMPEG, "-nostats", "-i", str(path), "-af", "ebur128=peak=true", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    summary = meter[meter.rindex("Summary:") :]
    return float(summary.split("I:")[1].split("LUFS")[0]), float(summary.split("Peak:")[1].split("dBFS")[0])


@requires(FFPROBE and SNDFILE_INFO, "ffprobe and sndfile-info")
@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus"])
def test_a_loop_carries_loop_points_and_decodes_to_its_exact_length(tmp_path: Path, fmt: str) -> None:
    made = master(loop_source(tmp_path), Settings(-16.0, -1.0, None, fmt, loop=True), TAGS, seed=1)
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(made.data)
    frames = math.ceil(2 * RATE * 48000 / RATE) if fmt == "opus" else 2 * RATE
    decoded, rate = sf.read(out, always_2d=True)
    assert len(decoded) == made.frames == frames and rate == (48000 if fmt == "opus" else RATE)
    if fmt == "wav":
        info = subprocess.run([SNDFILE_INFO, "--instrument", str(out)], capture_output=True, text=True).stdout
        loop = next(line for line in info.splitlines() if "Mode" in line)
        assert "fwd" in loop and "Start :      0" in loop and f"End : {frames:6d}" in loop, info  # end exclusive
        assert "Loop points : 1" in info
    else:
        tags = probe_tags(out)
        assert tags["LOOPSTART"] == "0" and tags["LOOPLENGTH"] == str(frames), tags
        assert tags["TITLE"] == "theme" and tags["SEED"] == "7"
    if FFMPEG:  # an independent decoder counts the same samples (Opus: pre-skip and end trimming honoured)
        pcm = subprocess.run(
            [FFMPEG, "-v", "error", "-i", str(out), "-f", "f32le", "-ac", "2", "-"], capture_output=True, check=True
        ).stdout
        assert len(pcm) // 8 == frames


@pytest.mark.parametrize(
    ("fmt", "loop", "smooth"),
    [
        ("wav", True, True),
        ("flac", True, True),
        ("ogg", True, True),
        ("opus", True, True),
        ("wav", False, False),
        ("opus", False, False),
    ],
)
def test_a_levelled_loop_has_no_step_at_its_seam(tmp_path: Path, fmt: str, loop: bool, smooth: bool) -> None:
    """Resampled and levelled into the limiter, a loop curves across its seam no more than next to
    it; processed as a line instead (loop=False), the limiter leaves a step there: the test tells."""
    made = master(loop_source(tmp_path), Settings(-9.0, -1.0, 48000, fmt, loop=loop), TAGS, seed=1)
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(made.data)
    audio, _ = sf.read(out, always_2d=True)
    seam, near = seam_step(audio)
    assert (seam <= 1.5 * near) is smooth, (seam, near)
    assert made.measured["truePeakDbtp"] <= -1.0 + 0.05


@requires(FFMPEG, "ffmpeg")
@pytest.mark.parametrize("preset", list(LEVELS))
def test_each_preset_lands_within_half_a_lu_by_ffmpeg(tmp_path: Path, preset: str) -> None:
    level = LEVELS[preset]
    rng = np.random.default_rng(3)
    t = np.arange(4 * 48000) / 48000
    music = 0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) + 0.02 * rng.standard_normal(len(t))
    source = tmp_path / "music.wav"
    sf.write(source, np.stack([music, np.roll(music, 100)], axis=1), 48000, subtype="PCM_16")
    for fmt in ("wav", "mp3") if preset == "streaming" else ("wav",):
        made = master(source, Settings(level.loudness, level.true_peak, None, fmt), TAGS, seed=1)
        out = tmp_path / f"out.{fmt}"
        out.write_bytes(made.data)
        lufs, peak = ebur128(out)
        assert lufs == pytest.approx(level.loudness, abs=0.5), (preset, fmt, lufs)
        assert peak <= level.true_peak + 0.2, (preset, fmt, peak)


@requires(FFMPEG, "ffmpeg")
@pytest.mark.parametrize(("seconds", "measure_by"), [(0.15, "clip"), (1.0, "integrated"), (2.0, "integrated")])
def test_short_effects_are_levelled_by_a_measure_they_have(tmp_path: Path, seconds: float, measure_by: str) -> None:
    rng = np.random.default_rng(5)
    n = round(seconds * 48000)
    burst = 0.05 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.3 * n))
    source = tmp_path / "sfx.wav"
    sf.write(source, np.stack([burst, burst], axis=1), 48000, subtype="PCM_16")
    made = master(source, Settings(-23.0, -1.0, None, "wav"), TAGS, seed=1)
    assert made.measured["levelledBy"] == measure_by and made.measured["target"] == -23.0
    reached = made.measured["clipLufs" if measure_by == "clip" else "integratedLufs"]
    assert reached == pytest.approx(-23.0, abs=0.5)
    if measure_by == "integrated":
        out = tmp_path / "sfx-out.wav"
        out.write_bytes(made.data)
        assert ebur128(out)[0] == pytest.approx(-23.0, abs=0.5)


def test_a_near_silent_clip_is_refused_not_raised_by_fifty_db(tmp_path: Path) -> None:
    source = tmp_path / "hiss.wav"
    sf.write(source, np.full((4800, 2), 0.0005), 48000, subtype="PCM_16")  # 100 ms at about -66 dBFS
    with pytest.raises(MasteringError, match="near silent") as refused:
        master(source, Settings(-23.0, -1.0, None, "wav"), TAGS, seed=1)
    assert "hiss.wav" in str(refused.value) and "\n" not in str(refused.value)


@requires(FFPROBE, "ffprobe")
@pytest.mark.parametrize(("fmt", "option", "expected"), [("opus", 96, 96000), ("mp3", 128, 128000), ("ogg", 3, 112000)])
def test_bitrate_and_quality_reach_the_encoder(tmp_path: Path, fmt: str, option: int, expected: int) -> None:
    """--bitrate for Opus and MP3 and --quality for Vorbis, as ffprobe reads them (Opus and Vorbis
    are variable: within a fifth)."""
    rng = np.random.default_rng(9)
    source = tmp_path / "noise.wav"
    sf.write(source, 0.1 * rng.standard_normal((5 * 48000, 2)), 48000, subtype="PCM_16")
    settings = Settings(None, None, None, fmt, quality=option if fmt == "ogg" else None, bitrate=option)
    out = tmp_path / f"out.{fmt}"
    out.write_bytes(master(source, settings, TAGS, seed=1).data)
    assert FFPROBE is not None
    shown = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "format=bit_rate", "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert int(shown) == pytest.approx(expected, rel=0.2)
    if fmt == "mp3":
        assert probe_tags(out)["TITLE"] == "theme"


def test_comment_headers_larger_than_a_page_are_paged_with_valid_crcs(tmp_path: Path) -> None:
    source = loop_source(tmp_path, 1.0)
    data = master(source, Settings(None, None, None, "ogg"), TAGS, seed=1).data
    big = ogg.with_comments(data, [("NOTE", "x" * 100_000), ("LOOPSTART", "0")])
    assert ogg.comments(big)[1] == ("LOOPSTART", "0") and len(ogg.pages(big)) > len(ogg.pages(data))
    for page_bytes in _raw_pages(big):
        stored = int.from_bytes(page_bytes[22:26], "little")
        assert ogg.crc(page_bytes[:22] + b"\0\0\0\0" + page_bytes[26:]) == stored
    (tmp_path / "big.ogg").write_bytes(big)
    assert len(sf.read(tmp_path / "big.ogg")[0]) == RATE


def _raw_pages(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        count = data[pos + 26]
        size = 27 + count + sum(data[pos + 27 : pos + 27 + count])
        out.append(data[pos : pos + size])
        pos += size
    return out


LOOPS = """\
batch: kit
seed: 3
model: model_elevenlabs-sound-effects-v2
tracks:
  - {name: wind, prompt: "howling wind", durationSeconds: 3, loop: true}
  - {name: door, prompt: "door slam", durationSeconds: 1}
"""


async def test_engines_and_mp3_loops(served: Served, tmp_path: Path) -> None:
    """A loop asked for as MP3 is refused in one line unless --allow-mp3-loops; --for godot makes
    loops WAV (its importer reads smpl) and the rest Ogg Vorbis."""
    manifest = tmp_path / "kit.yaml"
    manifest.write_text(LOOPS)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "delivery"
    refused = deliver(load(manifest), tmp_path / "out", Options(to, fmt="mp3", select="all"), lambda _: None)
    assert refused.written == ["door.mp3"] and len(refused.problems) == 1
    assert (
        refused.problems[0].startswith("wind: a loop cannot be delivered as MP3")
        and "--allow-mp3-loops" in (refused.problems[0])
    )
    allowed = Options(to, fmt="mp3", select="all", allow_mp3_loops=True)
    assert deliver(load(manifest), tmp_path / "out", allowed, lambda _: None).written == ["wind.mp3"]
    godot = Options(tmp_path / "godot", fmt="ogg", loop_fmt="wav", select="all", loudness=-18.0)
    made = deliver(load(manifest), tmp_path / "out", godot, lambda _: None)
    assert sorted(made.written) == ["door.ogg", "wind.wav"]
    record = {r["file"]: r for r in json.loads((tmp_path / "godot" / "delivery.json").read_text())["files"]}
    assert record["wind.wav"]["loopStart"] == 0 and record["wind.wav"]["loopLength"] == record["wind.wav"]["frames"]
    assert "loopLength" not in record["door.ogg"] and record["door.ogg"]["levelledBy"] == "integrated"
    rows = (tmp_path / "godot" / "delivery.csv").read_text().splitlines()
    assert "loopLength" in rows[0] and any(row.startswith("wind.wav") for row in rows)


async def test_the_command_line_applies_a_preset_and_an_engine(served: Served, tmp_path: Path) -> None:
    """`deliver --preset aswg-mobile --for godot`: -18 LUFS, loops as WAV and the rest as Ogg,
    both presets named in delivery.json; an explicit --loudness wins over the preset's."""
    from batchgen.cli import main

    manifest = tmp_path / "kit.yaml"
    manifest.write_text(LOOPS)
    await run(served, manifest, fast(tmp_path / "out"))
    to = tmp_path / "godot"
    args = ["deliver", str(manifest), "--out", str(tmp_path / "out"), "--to", str(to), "--all"]
    code = await asyncio.to_thread(main, [*args, "--preset", "aswg-mobile", "--for", "godot"])
    assert code == 0
    doc = json.loads((to / "delivery.json").read_text())
    assert doc["options"]["preset"] == "aswg-mobile" and doc["options"]["for"] == "godot"
    assert doc["options"]["loudness"] == -18.0 and doc["options"]["truePeak"] == -1.0
    assert sorted(r["file"] for r in doc["files"]) == ["door.ogg", "wind.wav"]
    code = await asyncio.to_thread(main, [*args, "--preset", "aswg-mobile", "--loudness", "-20", "--format", "flac"])
    doc = json.loads((to / "delivery.json").read_text())
    assert code == 0 and doc["options"]["loudness"] == -20.0
    assert sorted(r["file"] for r in doc["files"]) == ["door.flac", "wind.flac"]

"""The listening page: waveform reduction, escaping, and the real page in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from batchgen import load
from batchgen.listen.report import build
from batchgen.listen.waveform import svg_path, waveform
from batchgen.run.progress import Reporter
from batchgen.run.runner import RunConfig, Runner
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.simulator import Faults

from ..browser import Browser, find_chromium
from ..conftest import KEY, SECRET, Served
from ..helpers import requires

MANIFEST = """\
batch: room
seed: 4
defaults: {duration: 2}
tracks:
  - {name: forest-calm, prompt: "calm forest, soft flute, 70 bpm", takes: 2}
  - {name: boss-battle, prompt: "epic battle <script>alert(1)</script> & taiko, 140 bpm", takes: 3, duration: 3}
  - {name: cave, prompt: "dark cave drones, 60 bpm", modelVersion: melody-large, temperature: 0.8}
  - {name: refused, prompt: "forbidden tune"}
"""


def test_waveform_reduction() -> None:
    """Min/max per column map full scale to the box edges and silence to the middle."""
    samples = [0] * 100 + [32767, -32768] * 50 + [0] * 100
    cols = waveform(samples, columns=4, height=40)
    assert len(cols) == 4
    assert cols[0] == (20, 21)  # silence: a one-pixel line in the middle
    assert cols[1][0] == 0 and cols[1][1] == 40  # full scale: top to bottom
    assert waveform([], 10) == []
    assert len(waveform([5, -5, 7], columns=400)) == 3


def test_svg_path_is_compact_and_relative() -> None:
    """The path has one stroke per column, in relative moves, and stays small for 200 columns."""
    path = svg_path([(10, 30), (5, 35), (20, 21)])
    assert path == "M0 10v20m1 -25v30m1 -15v1"
    big = svg_path(waveform([int(30000 * ((i % 50) / 25 - 1)) for i in range(48000)]))
    assert big.count("v") == 200 and len(big) < 2400


async def make_batch(served: Served, tmp_path: Path) -> Path:
    served.sim.faults = Faults(refuse_prompts=("forbidden",))
    path = tmp_path / "room.yaml"
    path.write_text(MANIFEST)
    config = RunConfig(out=tmp_path / "out", rate=50, poll_interval=0.02, poll_max=0.05)
    async with ScenarioClient(served.url, Credentials(KEY, SECRET)) as client:
        await Runner(load(path), client, config, Reporter(quiet=True)).run()
    return build(load(path), tmp_path / "out")


async def test_page_escapes_and_lists_everything(served: Served, tmp_path: Path) -> None:
    """Every file has a player and a waveform; failures show with reasons; manifest text is escaped."""
    page = (await make_batch(served, tmp_path)).read_text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; taiko" in page
    srcs = re.findall(r'<audio controls preload=\w+ src="([^"]+)"', page)
    assert sorted(srcs) == sorted(p.name for p in (tmp_path / "out" / "room").glob("*.wav"))
    assert len(srcs) == 6 and page.count("<svg class=wave") == 6
    assert "refused" in page and "moderation" in page
    assert "temperature: 0.8" in page  # parameters that differ from the defaults
    assert "http://" not in page and "https://" not in page  # nothing external


async def test_the_page_shows_the_plan_not_the_raw_state(served: Served, tmp_path: Path) -> None:
    """A take whose prompt changed since it was made, and one whose file is gone, are not shown as
    done (no player): the page says what the next run will do with them, as `plan` does."""
    await make_batch(served, tmp_path)
    path, folder = tmp_path / "room.yaml", tmp_path / "out" / "room"
    path.write_text(MANIFEST.replace("dark cave drones", "darker cave drones"))
    (folder / "forest-calm-t1.wav").unlink()
    page = build(load(path), tmp_path / "out").read_text()
    srcs = re.findall(r'<audio controls preload=\w+ src="([^"]+)"', page)
    assert "cave.wav" not in srcs and "forest-calm-t1.wav" not in srcs and len(srcs) == 4
    assert "changed in the manifest since it was made" in page and "its file is missing" in page


async def test_page_of_2000_files_stays_small(served: Served, tmp_path: Path) -> None:
    """Waveforms of 400 points keep a 2,000-file page within a few MB."""
    from batchgen.core.task import Task
    from batchgen.listen.report import Entry, render

    wave_path = svg_path(waveform([int(32000 * ((i * 7919) % 200 / 100 - 1)) for i in range(32000)]))
    entries = [
        Entry(
            Task(f"t{i}", f"track{i // 4}", i % 4 + 1, {"prompt": f"p {i}", "seed": i}, "d", "m"),
            "done",
            file=f"t{i}.wav",
            seconds=8.0,
            wave=wave_path,
            cost=8,
        )
        for i in range(2000)
    ]
    size = len(render("big", entries).encode())
    assert size < 8 * 1024 * 1024, size


CHROMIUM = find_chromium()


@requires(CHROMIUM, "Chromium")
async def test_page_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    """In a real browser from file://: every audio element loads its WAV, filtering hides the rest."""
    page = await make_batch(served, tmp_path)
    assert CHROMIUM is not None
    async with Browser(CHROMIUM) as browser:
        await browser.open(page.resolve().as_uri())
        loaded = await browser.audio_loaded()
        assert len(loaded) == 6
        assert all(item["ok"] and item["duration"] > 1.5 for item in loaded), loaded
        shown = "[...document.querySelectorAll('section.track')].filter(s => !s.classList.contains('hidden')).length"
        assert await browser.eval(shown) == 4
        await browser.eval(
            "{ const f = document.getElementById('filter'); f.value = 'taiko'; f.dispatchEvent(new Event('input')); }"
        )
        assert await browser.eval(shown) == 1
        assert (
            await browser.eval("document.querySelector('section.track:not(.hidden) h2').textContent") == "boss-battle"
        )
        await browser.eval(
            "{ const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); }"
        )
        assert await browser.eval(shown) == 4
        shot = tmp_path / "listening-room.png"
        await browser.screenshot(shot)
        assert shot.stat().st_size > 10_000
        if target := os.environ.get("BATCHGEN_SCREENSHOT"):
            shutil.copy(shot, target)

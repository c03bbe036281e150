"""manifests/game-audio-kit.yaml end to end on the simulator: MusicGen (a cut loop), ElevenLabs SFX
(loop: true, MP3), MM Audio, Beatoven, MiniMax with lyrics and TTS lines from a CSV, each file
checked by its magic bytes, the rerun paying nothing, and every take playing in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..browser import Browser, find_chromium
from ..helpers import ROOT, env_for, requires, run_cli

pytestmark = pytest.mark.e2e
CHROMIUM = find_chromium()
MAGIC = {".wav": (b"RIFF",), ".mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xe3"), ".ogg": (b"OggS",)}


def run_kit(out: Path) -> str:
    args = ["run", str(ROOT / "manifests" / "game-audio-kit.yaml"), "--simulate", "--out", str(out), "--yes"]
    args += ["--rate", "20", "--poll-interval", "0.05"]
    proc = run_cli(args, env_for(None, BATCHGEN_SIMULATE_JOB_TIME="0.1"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The kit, run once for this module's tests: its output root and the run's summary."""
    out = tmp_path_factory.mktemp("kit")
    return out, run_kit(out)


def test_game_audio_kit_runs_to_done_in_each_models_format(kit: tuple[Path, str]) -> None:
    out, summary = kit
    assert "12/12 done" in summary and "0 failed" in summary
    folder = out / "game-audio-kit"
    sidecars = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert len(sidecars) == 12
    models = {s["model"] for s in sidecars.values()}
    assert {"model_meta-musicgen", "model_elevenlabs-sound-effects-v2", "model_elevenlabs-tts-v3"} <= models
    assert "model_minimax-music-2-6" in models
    for name, sidecar in sidecars.items():
        path = folder / sidecar["file"]
        assert path.read_bytes()[:4].startswith(MAGIC[path.suffix]), (name, path.read_bytes()[:4])
        assert sidecar["schemaDigest"] and sidecar["prompt"]
    assert (folder / "amb-forest-night.mp3").exists() and sidecars["amb-forest-night"]["params"]["loop"] is True
    assert sidecars["vo-guard-pass"]["params"]["text"].startswith("You may pass")
    assert "lyrics" in sidecars["tavern-song"]["params"] and sidecars["tavern-song"]["seed"] is None
    recorded = {p.stem for p in (folder / ".batchgen" / "models").glob("*.json")}
    assert recorded == models | {"model_beatoven-sound-effect", "model_mm-audio-2-t2a"}
    again = run_kit(out)  # everything is made: the rerun pays nothing
    assert "12/12 done (0 new, 12 already done)" in again and "0 CU spent" in again


@requires(CHROMIUM, "Chromium")
async def test_every_take_of_the_kit_plays_in_chromium(kit: tuple[Path, str]) -> None:
    """WAV and MP3 takes alike load in a real browser from the listening page."""
    assert CHROMIUM is not None
    page, takes = kit[0] / "game-audio-kit" / "index.html", 12
    async with Browser(CHROMIUM) as browser:
        await browser.open(page.resolve().as_uri())
        loaded = await browser.audio_loaded()
        assert len(loaded) == takes
        assert all(item["ok"] and item["duration"] > 0.3 for item in loaded), loaded
        assert {item["src"].rsplit(".", 1)[-1] for item in loaded} == {"wav", "mp3"}

"""The simulator's resources, each as strict as the API may be: jobs, assets, uploads, the CDN."""

from __future__ import annotations

import asyncio
import base64
import itertools
import statistics

import aiohttp
import pytest

from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.simulator import Faults, Simulator, serve
from batchgen.simulator.answers import charged, check_basic, error, parse_iso
from batchgen.simulator.assets import AssetsApi
from batchgen.simulator.cdn import CdnApi
from batchgen.simulator.jobs import JobsApi
from batchgen.simulator.model import price
from batchgen.simulator.uploads import UploadsApi
from batchgen.simulator.world import World

from ..conftest import KEY, SECRET

PARAMS = {"prompt": "calm forest", "duration": 2, "seed": 5, "modelVersion": "stereo-melody-large"}


def test_the_simulator_is_its_resources_over_one_state() -> None:
    sim = Simulator()
    for part in (JobsApi, AssetsApi, UploadsApi, CdnApi, World):
        assert isinstance(sim, part)
    assert sim.app is sim.app  # built once


def test_answers() -> None:
    header = "Basic " + base64.b64encode(b"k:s").decode()
    assert check_basic(header, "k", "s")
    assert not check_basic(header, "k", "t") and not check_basic("Basic !!", "k", "s") and not check_basic("", "k", "s")
    assert parse_iso("2026-01-01T00:00:00Z") == 1767225600.0 and parse_iso("12.5") == 12.5 and parse_iso("no") is None
    assert error(429, "slow down").status == 429
    assert charged(10, 2) == {
        "creativeUnitsCost": 8,
        "costDetails": {"custom-generation": 8},
        "creativeUnitsDiscount": 2,
    }


def test_price_rules() -> None:
    """The stand-in cost model: per second by model, diffusion costs more, whole units."""
    ten = {**PARAMS, "duration": 10}
    mono = price({**ten, "modelVersion": "melody-large"})
    assert (price(ten), mono) == (10, 7)
    assert price({**ten, "modelVersion": "melody-large", "multiBandDiffusion": True}) == 9  # 8.75, rounded up
    assert price({**ten, "duration": 20}) == 2 * price(ten)


async def test_every_arrival_counts_refused_ones_too() -> None:
    """A closed one-second window: the refused arrivals keep the window full."""
    sim = Simulator(faults=Faults(rate_limit=2, seed=1))
    answers = [sim._over_rate() for _ in range(4)]
    assert [a is None for a in answers] == [True, True, False, False]
    assert len(sim.rate_arrivals) == 4 and sim.faults.injected["rate-limit"] == 2


async def test_the_cdn_is_as_strict_as_signed_storage() -> None:
    sim = Simulator(key=KEY, secret=SECRET, job_time=0.02)
    async with serve(sim) as url, ScenarioClient(url, Credentials(KEY, SECRET)) as client:
        job = (await client.generate("model_meta-musicgen", PARAMS)).job
        async with asyncio.timeout(10):
            while not job.terminal:
                await asyncio.sleep(0.02)
                job = await client.get_job(job.id)
        asset = await client.get_asset(job.asset_ids[0])
        async with aiohttp.ClientSession() as raw:
            async with raw.get(asset.url, headers={"Range": "bytes=10-"}) as resp:
                assert resp.status == 206 and resp.headers["Content-Range"].startswith("bytes 10-")
            async with raw.get(asset.url, headers={"Authorization": "Bearer x"}) as resp:
                assert resp.status == 400  # a signed URL and an auth header: refused
            async with raw.get(asset.url.replace("sig=", "sig=0")) as resp:
                assert resp.status == 403
            async with raw.get(asset.url, headers={"Range": "bytes=99999999-"}) as resp:
                assert resp.status == 416


async def test_an_upload_part_takes_no_auth_header_and_completes_only_with_data() -> None:
    sim = Simulator(key=KEY, secret=SECRET, job_time=0.02)
    async with serve(sim) as url, ScenarioClient(url, Credentials(KEY, SECRET)) as client:
        upload = await client.create_upload("in.wav", 10, "audio/wav")
        with pytest.raises(Exception, match="no parts"):
            await client.complete_upload(upload.id)
        auth = {"Authorization": "Basic x"}
        async with aiohttp.ClientSession() as raw, raw.put(upload.part_urls[0], data=b"x", headers=auth) as resp:
            assert resp.status == 400


def test_effects_and_speech_sound_like_their_kind() -> None:
    """A sound effect is as long as asked and wraps seamlessly when looped; speech lasts as its text does."""
    import io
    import wave

    from batchgen.simulator.audio import render_kind

    def samples(data: bytes) -> list[int]:
        with wave.open(io.BytesIO(data)) as w:
            frames = w.readframes(w.getnframes())
        return [int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, len(frames), 2)]

    def wrap_jump(x: list[int]) -> float:
        """The step from the last sample to the first, against the signal's own steps there."""
        local = [abs(b - a) for a, b in (*itertools.pairwise(x[-200:]), *itertools.pairwise(x[:200]))]
        return abs(x[0] - x[-1]) / (statistics.median(local) + 1)

    looped = [samples(render_kind("effects", "door creak", seed, 1.0, 1, True)) for seed in range(10)]
    cut = [samples(render_kind("effects", "door creak", seed, 1.0, 1, False)) for seed in range(10)]
    assert all(len(x) == 16000 for x in looped) and max(max(map(abs, x)) for x in looped) > 3000
    assert max(map(wrap_jump, looped)) <= 4 < max(map(wrap_jump, cut))  # a loop never clicks; a cut one does
    short = samples(render_kind("speech", "Halt!", 1, 1.0, 1, False))
    assert len(short) == 16000 and max(map(abs, short)) > 3000
    assert render_kind("speech", "Halt!", 1, 1.0, 1, False) == render_kind("speech", "Halt!", 1, 1.0, 1, False)


async def test_a_generate_body_is_held_to_the_models_schema_and_its_rules() -> None:
    from batchgen.core.errors import ApiError

    sim = Simulator(key=KEY, secret=SECRET, job_time=0.02)
    async with serve(sim) as url, ScenarioClient(url, Credentials(KEY, SECRET)) as client:
        with pytest.raises(ApiError, match="prompt: a prompt or lyrics is required"):
            await client.generate("model_ace-step-1-5-turbo-text-to-music", {"duration": 10})
        with pytest.raises(ApiError, match="outputFormat: must be one of"):
            await client.generate("model_elevenlabs-sound-effects-v2", {"text": "door", "outputFormat": "flac"})
        made = await client.generate("model_ace-step-1-5-turbo-text-to-music", {"lyrics": "[Verse] la", "duration": 10})
        assert made.cost == 10  # a creative unit per second made


def test_music_renders_the_same_bytes_with_or_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy only speeds the renderer up: the core install (no numpy) makes the same files."""
    from batchgen.simulator import audio

    cases = [("calm forest, 70 bpm", 1, 6.0, 2), ("dark cave, ominous", 7, 3.3, 1), ("x", 5, 0.05, 2)]
    audio._tone.cache_clear()
    fast = [audio.render(*case) for case in cases]
    audio._tone.cache_clear()
    monkeypatch.setattr(audio, "_numpy", lambda: None)
    try:
        plain = [audio.render(*case) for case in cases]
    finally:
        audio._tone.cache_clear()
    assert plain == fast

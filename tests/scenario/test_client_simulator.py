"""The API client against the simulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import pytest

from batchgen.core.errors import ApiError, CredentialsError, DownloadError, ErrorKind, UsageError
from batchgen.core.params import MODEL_ID
from batchgen.core.retry import Backoff
from batchgen.run.download import Limits
from batchgen.scenario.assets import AssetBatcher
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient, retry_hint
from batchgen.scenario.models import Asset, Job
from batchgen.scenario.uploads import upload_audio
from batchgen.simulator import Faults, Simulator, serve
from batchgen.simulator.audio import render

from ..conftest import KEY, SECRET, Served
from ..helpers import eventually

PARAMS = {"prompt": "calm forest, 80 bpm", "duration": 2, "seed": 5, "modelVersion": "stereo-melody-large"}


async def finished(client: ScenarioClient, job_id: str) -> Job:
    for _ in range(200):
        job = await client.get_job(job_id)
        if job.terminal:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("job never finished")


async def fetch(client: ScenarioClient, url: str, offset: int = 0) -> tuple[int, bytes]:
    async with client.download(url, offset=offset) as resp:
        return resp.status, await resp.read()


async def test_generate_poll_asset_download(client: ScenarioClient, served: Served) -> None:
    """generate -> job -> asset -> download yields the WAV the job made, downloaded without auth."""
    sub = await client.generate(MODEL_ID, PARAMS)
    assert sub.job.status == "queued" and sub.cost == 2
    job = await finished(client, sub.job.id)
    assert job.status == "success" and job.cost == 2 and len(job.asset_ids) == 1
    assert dict(job.input) == PARAMS
    asset = await client.get_asset(job.asset_ids[0])
    assert asset.mime_type == "audio/wav"
    status, data = await fetch(client, asset.url)  # the CDN answers 400 to a request with auth
    assert status == 200 and len(data) == asset.size
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 2
        assert w.getnframes() / w.getframerate() == pytest.approx(2.0)
    assert data == render(PARAMS["prompt"], 5, 2.0, 2)


async def test_asset_hidden_until_job_succeeds(client: ScenarioClient, served: Served) -> None:
    """A running job lists no assets yet; its asset id answers 404 until then."""
    served.sim.job_time = 5
    sub = await client.generate(MODEL_ID, PARAMS)
    job = await client.get_job(sub.job.id)
    assert not job.terminal and job.asset_ids == ()
    with pytest.raises(ApiError) as info:
        await client.get_asset(served.sim.jobs[sub.job.id].asset_ids[0])
    assert info.value.status == 404 and info.value.kind is ErrorKind.PERMANENT


async def test_dry_run_prices_without_a_job(client: ScenarioClient, served: Served) -> None:
    """The dry run goes in the query string, answers 269 with a cost, and creates no job."""
    cost = await client.estimate(MODEL_ID, {**PARAMS, "duration": 10})
    assert cost == 10
    stats = served.sim.stats()
    assert stats["jobs"] == [] and stats["dry_runs"] == 1 and stats["dry_run_in_body"] == 0


async def test_invalid_params_are_permanent_400(client: ScenarioClient) -> None:
    """The simulator applies the manifest's own rules: bad input is a permanent 400 with a reason."""
    with pytest.raises(ApiError) as info:
        await client.generate(MODEL_ID, {"prompt": "x", "duration": 99})
    err = info.value
    assert err.status == 400 and err.kind is ErrorKind.PERMANENT and "duration" in err.reason
    assert err.trace_id and not err.ambiguous


async def test_bad_credentials(served: Served) -> None:
    """401 becomes CredentialsError, and neither it nor the client's repr shows the secret."""
    async with ScenarioClient(served.url, Credentials(KEY, "wrong-secret-123")) as bad:
        with pytest.raises(CredentialsError) as info:
            await bad.get_job("job_x")
        assert info.value.kind is ErrorKind.CREDENTIALS and info.value.exit_code == 2
        assert "wrong-secret-123" not in str(info.value) + repr(info.value) + repr(bad)


def test_credentials_from_env_and_redaction() -> None:
    """Both variable spellings work; missing ones are a usage error; repr hides the secret."""
    creds = Credentials.from_env({"SCENARIO_SDK_API_KEY": "k-123456", "SCENARIO_SDK_API_SECRET": "s3cr3t-v"})
    assert (creds.key, creds.secret) == ("k-123456", "s3cr3t-v")
    assert "s3cr3t-v" not in repr(creds) + str(creds)
    assert creds.redact(f"echo {creds.header} s3cr3t-v") == "echo Basic *** ***"
    with pytest.raises(UsageError, match="SCENARIO_API_KEY"):
        Credentials.from_env({"SCENARIO_API_KEY": "k"})


async def test_unknown_job_is_permanent_404(client: ScenarioClient) -> None:
    """An unknown job id is a permanent 404."""
    with pytest.raises(ApiError) as info:
        await client.get_job("job_nope")
    assert (info.value.status, info.value.kind) == (404, ErrorKind.PERMANENT)


@pytest.mark.parametrize("style", ["seconds", "date", "ms", "body"])
async def test_rate_limit_hint_in_every_dialect(client: ScenarioClient, served: Served, style: str) -> None:
    """A 429 from the submit rate limit is transient and carries a retry hint in each form."""
    served.sim.faults = Faults(rate_limit=1, rate_window=2.0, retry_style=style)
    await client.generate(MODEL_ID, PARAMS)
    with pytest.raises(ApiError) as info:
        await client.generate(MODEL_ID, PARAMS)
    err = info.value
    assert err.status == 429 and err.kind is ErrorKind.TRANSIENT and not err.ambiguous
    assert err.retry_after is not None and 0 < err.retry_after <= 3.1


async def test_action_limit_is_reported(client: ScenarioClient, served: Served) -> None:
    """Past the concurrency ceiling the 429 carries details.actionLimit."""
    served.sim.job_time = 5
    served.sim.faults = Faults(action_limit=2)
    for _ in range(2):
        await client.generate(MODEL_ID, PARAMS)
    with pytest.raises(ApiError) as info:
        await client.generate(MODEL_ID, PARAMS)
    assert info.value.status == 429 and info.value.action_limit == 2


async def test_server_errors_and_drops_are_transient(client: ScenarioClient, served: Served) -> None:
    """500/503 and dropped connections are transient; on a POST they are ambiguous."""
    served.sim.faults = Faults(error_rate=1.0, seed=3)
    with pytest.raises(ApiError) as info:
        await client.generate(MODEL_ID, PARAMS)
    assert info.value.status in (500, 503) and info.value.kind is ErrorKind.TRANSIENT and info.value.ambiguous
    served.sim.faults = Faults(drop_rate=1.0, seed=3)
    with pytest.raises(ApiError) as info:
        await client.get_job("job_x")
    assert info.value.status == 0 and info.value.kind is ErrorKind.TRANSIENT and not info.value.ambiguous
    with pytest.raises(ApiError) as info:
        await client.generate(MODEL_ID, PARAMS)
    assert info.value.status == 0 and info.value.ambiguous


async def test_connection_refused_is_transient_not_ambiguous() -> None:
    """Nothing listening: transient, and a POST that never connected is not ambiguous."""
    async with ScenarioClient("http://127.0.0.1:9/v1", Credentials(KEY, SECRET), connect_timeout=2) as c:
        with pytest.raises(ApiError) as info:
            await c.generate(MODEL_ID, PARAMS)
    assert info.value.status == 0 and info.value.kind is ErrorKind.TRANSIENT and not info.value.ambiguous


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "7"}, None, 7.0),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)}, None, 30.0),
        ({"retry-after-ms": "1500"}, None, 1.5),
        ({}, {"remainingSeconds": 4}, 4.0),
        ({}, {"details": {"remainingSeconds": 2.5}}, 2.5),
        ({"Retry-After": "soon"}, None, None),
        ({}, {"reason": "x"}, None),
        ({"Retry-After": "-3"}, None, 0.0),
    ],
)
def test_retry_hint_forms(headers: dict[str, str], body: dict[str, object] | None, expected: float | None) -> None:
    """Every documented retry hint parses to seconds; garbage gives no hint."""
    hint = retry_hint(headers, body, now=NOW)
    assert hint == (pytest.approx(expected, abs=1) if expected is not None else None)


def test_job_parse_tolerates_id_and_extra_fields() -> None:
    """job.id works when jobId is missing, and unknown fields are ignored."""
    job = Job.parse({"job": {"id": "job_1", "status": "in-progress", "progress": 0.5, "surprise": [1]}, "extra": 1})
    assert (job.id, job.status, job.progress, job.terminal) == ("job_1", "in-progress", 0.5, False)


async def test_list_jobs_filters_and_pages(client: ScenarioClient, served: Served) -> None:
    """Listing is newest first, filtered by status and createdAfter, across pagination tokens."""
    ids = [(await client.generate(MODEL_ID, {**PARAMS, "seed": i})).job.id for i in range(5)]
    jobs, token = await client.list_jobs(page_size=2)
    assert [j.id for j in jobs] == ids[::-1][:2] and token
    every = [j.id async for j in client.iter_jobs(page_size=2)]
    assert every == ids[::-1]
    await finished(client, ids[-1])
    done = [j.id async for j in client.iter_jobs(status="success")]
    assert set(done) == set(ids)
    later = [j.id async for j in client.iter_jobs(created_after="2999-01-01T00:00:00Z")]
    assert later == []


async def _asset_ids(client: ScenarioClient, served: Served, count: int) -> list[str]:
    """The asset ids of `count` finished jobs (jobs finish at once)."""
    served.sim.job_time = 0
    ids = []
    for i in range(count):
        sub = await client.generate(MODEL_ID, {"prompt": "p", "duration": 1, "seed": i})
        ids.extend(served.sim.jobs[sub.job.id].asset_ids)
    return ids


async def test_bulk_assets_in_chunks_of_200(client: ScenarioClient, served: Served) -> None:
    """201 asset ids take two bulk calls and return every asset."""
    ids = await _asset_ids(client, served, 201)
    assets = await client.get_assets(ids)
    assert sorted(a.id for a in assets) == sorted(ids)
    assert client.calls["assets-bulk"] == 2


async def test_upload_then_generate_with_input_audio(client: ScenarioClient, served: Served, tmp_path: Path) -> None:
    """A local file is uploaded through /uploads and usable as inputAudio."""
    melody = tmp_path / "theme.wav"
    melody.write_bytes(render("theme", 1, 1.0, 1))
    asset_id = await upload_audio(client, melody, policy=Backoff(0.01, 0.1, 5), first_poll=0.02)
    assert served.sim.assets[asset_id].data == melody.read_bytes()
    sub = await client.generate(MODEL_ID, {"prompt": "piano", "inputAudio": asset_id, "duration": 1})
    assert sub.job.input["inputAudio"] == asset_id
    with pytest.raises(ApiError, match="not found"):
        await client.generate(MODEL_ID, {"prompt": "piano", "inputAudio": "asset_unknown", "duration": 1})


async def test_expired_url_refreshed_through_asset(client: ScenarioClient, served: Served) -> None:
    """An expired signed URL answers 403 (expired); fetching the asset again gives a working one."""
    served.sim.faults.url_ttl = -1
    job = await finished(client, (await client.generate(MODEL_ID, PARAMS)).job.id)
    stale = await client.get_asset(job.asset_ids[0])
    with pytest.raises(DownloadError) as info:
        await fetch(client, stale.url)
    assert info.value.expired
    served.sim.faults.url_ttl = 60
    fresh = await client.get_asset(job.asset_ids[0])
    status, data = await fetch(client, fresh.url)
    assert status == 200 and len(data) == fresh.size


async def test_range_and_truncation(client: ScenarioClient, served: Served) -> None:
    """Range requests give 206 with the rest of the file; a truncated body is a payload error."""
    job = await finished(client, (await client.generate(MODEL_ID, PARAMS)).job.id)
    asset = await client.get_asset(job.asset_ids[0])
    _, whole = await fetch(client, asset.url)
    status, tail = await fetch(client, asset.url, offset=1000)
    assert status == 206 and tail == whole[1000:]
    served.sim.faults = Faults(truncate_rate=1.0, url_ttl=60)
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(client, asset.url)


async def test_non_http_url_refused(client: ScenarioClient) -> None:
    """An asset URL that is not http(s) is refused before any request."""
    with pytest.raises(DownloadError, match="not http"):
        await fetch(client, "file:///etc/passwd")


def test_audio_is_deterministic_and_valid() -> None:
    """Same prompt and seed give the same bytes; the WAV has the asked duration and channels."""
    a = render("dark cave, 60 bpm", 3, 1.5, 1)
    assert a == render("dark cave, 60 bpm", 3, 1.5, 1)
    assert a != render("dark cave, 60 bpm", 4, 1.5, 1)
    with wave.open(io.BytesIO(a)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        assert w.getnframes() == int(1.5 * w.getframerate())


async def test_simulator_rejects_auth_on_cdn(served: Served, client: ScenarioClient) -> None:
    """The CDN refuses a request that carries an Authorization header, like signed storage does."""
    job = await finished(client, (await client.generate(MODEL_ID, PARAMS)).job.id)
    asset = await client.get_asset(job.asset_ids[0])
    async with (
        aiohttp.ClientSession() as s,
        s.get(asset.url, headers={"Authorization": Credentials(KEY, SECRET).header}) as resp,
    ):
        assert resp.status == 400


async def test_cancel_job(client: ScenarioClient, served: Served) -> None:
    """A running job can be canceled; a finished one cannot."""
    served.sim.job_time = 5
    sub = await client.generate(MODEL_ID, PARAMS)
    await client.cancel_job(sub.job.id)
    assert (await client.get_job(sub.job.id)).status == "canceled"
    with pytest.raises(ApiError):
        await client.cancel_job(sub.job.id)


async def test_stats_endpoint(served: Served, client: ScenarioClient) -> None:
    """/__stats reports submissions, jobs and requests over HTTP."""
    await client.generate(MODEL_ID, PARAMS)
    async with aiohttp.ClientSession() as s, s.get(served.url.removesuffix("/v1") + "/__stats") as resp:
        stats = await resp.json()
    assert len(stats["submit_times"]) == 1 and stats["jobs"][0]["params"] == PARAMS
    assert stats["requests"]["POST /v1/generate/custom/{model}"] == 1
    assert time.time() - stats["jobs"][0]["created"] < 60


async def test_simulator_on_a_second_server() -> None:
    """Two simulators can run side by side on free ports."""
    async with serve(Simulator()) as a, serve(Simulator()) as b:
        assert a != b


async def test_download_verifies_checksum_and_leaves_nothing_on_mismatch(
    client: ScenarioClient, served: Served, tmp_path: Path
) -> None:
    """When the API gives a sha256, a file that does not match it is refused and removed."""
    import dataclasses
    import hashlib

    from batchgen.core.retry import Backoff
    from batchgen.run.download import download_asset

    job = await finished(client, (await client.generate(MODEL_ID, PARAMS)).job.id)
    asset = await client.get_asset(job.asset_ids[0])

    async def refresh() -> object:
        return await client.get_asset(asset.id)

    def save(checked: object, name: str) -> object:
        return download_asset(
            client,
            checked,
            tmp_path / name,
            refresh=refresh,
            limits=Limits(max_bytes=1 << 30),
            policy=Backoff(0.01, 0.1, 3),
            folder=tmp_path,
        )

    _, data = await fetch(client, asset.url)
    info = await save(dataclasses.replace(asset, checksum=hashlib.sha256(data).hexdigest()), "ok")
    assert info.path == "ok.wav" and (tmp_path / "ok.wav").read_bytes() == data
    with pytest.raises(DownloadError, match="sha256"):
        await save(dataclasses.replace(asset, checksum="0" * 64), "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.wav"]


async def test_a_download_cancelled_mid_write_leaves_no_part_and_no_descriptor(
    client: ScenarioClient, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes run in aiofiles' threads; a cancelled download waits for its write, then cleans up."""

    from batchgen.run.download import _Sink, download_asset

    monkeypatch.setattr(_Sink, "FLUSH", 64 * 1024)  # a write every few chunks, so the cancel meets one

    job = await finished(client, (await client.generate(MODEL_ID, {**PARAMS, "duration": 30})).job.id)
    asset = await client.get_asset(job.asset_ids[0])
    served.sim.faults.bandwidth = 400_000  # a 30 s WAV takes several seconds

    async def refresh() -> Asset:
        return await client.get_asset(asset.id)

    saving = asyncio.create_task(
        download_asset(
            client, asset, tmp_path / "a", refresh=refresh, limits=Limits(), policy=Backoff(), folder=tmp_path
        )
    )
    await eventually(lambda: _grown(tmp_path / "a.wav.part"), within=10, every=0.02)
    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving
    assert list(tmp_path.iterdir()) == []
    assert not [path for path in _open_files() if str(tmp_path) in path]  # the .part's descriptor is closed


def _open_files() -> list[str]:
    import contextlib
    import os

    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return out


async def _grown(part: Path) -> bool:
    return part.exists() and part.stat().st_size > 0


async def test_a_burst_of_asset_lookups_is_one_bulk_call_made_at_once(client: ScenarioClient, served: Served) -> None:
    """Lookups asked for in one moment are fetched in one call as soon as the burst is over, not after a window."""
    ids = await _asset_ids(client, served, 12)
    batcher = AssetBatcher(client, policy=Backoff(), window=30.0)
    runner = asyncio.create_task(batcher.run())
    try:
        started = time.monotonic()
        assets = await asyncio.wait_for(asyncio.gather(*(batcher.get(i) for i in ids)), 10)
        took = time.monotonic() - started
    finally:
        runner.cancel()
    assert [a.id for a in assets] == ids
    assert client.calls["assets-bulk"] == 1
    assert took < 5.0  # far below the window


async def test_a_model_is_described_by_its_schema(client: ScenarioClient) -> None:
    """GET /models/{id}: the shipped schema, read back as the client parses any live one."""
    from batchgen.store.schemas import shipped, shipped_ids

    for model_id in shipped_ids():
        assert await client.get_model(model_id) == shipped(model_id)
    with pytest.raises(ApiError) as err:
        await client.get_model("model_not-served")
    assert err.value.status == 404

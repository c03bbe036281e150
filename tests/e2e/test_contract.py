"""The contract: the official SDK, in strict mode, against `batchgen simulate` over a real socket.

`scenario-sdk` (generated from Scenario's OpenAPI spec, a test-only dependency) is the
one independent description of the API we have. Every endpoint batchgen uses is
called through it with `_strict_response_validation=True`: an answer the SDK's models
would reject fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from batchgen.simulator.audio import render

from ..helpers import ROOT, env_for

pytestmark = pytest.mark.e2e  # every test here runs batchgen as a subprocess

if TYPE_CHECKING:
    import scenario_sdk as sdk


def _sdk() -> Any:
    """The SDK, imported when a contract test runs (not when `-m "not e2e"` collects this file)."""
    return pytest.importorskip("scenario_sdk", reason="scenario-sdk is a test dependency: pip install -e '.[test]'")


KEY, SECRET = "contract-key", "contract-secret-not-shown"
SIMULATE = [
    sys.executable,
    "-m",
    "batchgen",
    "simulate",
    "--port",
    "0",
    "--key",
    KEY,
    "--secret",
    SECRET,
    "--job-time",
    "0.3",
]
MODEL = "model_meta-musicgen"
PROJECT = "proj_contract"
BODY = {"prompt": "calm forest, 80 bpm", "duration": 2, "seed": 5, "modelVersion": "melody-large"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """`batchgen simulate` as users start it, on a free port."""
    proc = subprocess.Popen(
        SIMULATE,
        cwd=ROOT,
        env=env_for(None),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        match = None
        while match is None:
            line = proc.stdout.readline()
            assert line, "the simulator did not start"
            match = re.search(r"SCENARIO_BASE_URL=(\S+)", line)
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def client(url: str) -> sdk.Scenario:
    return _sdk().Scenario(
        api_key=KEY, api_secret=SECRET, base_url=url, _strict_response_validation=True, max_retries=0
    )


def wait_for_job(client: sdk.Scenario, job_id: str, **project: str) -> object:
    deadline = time.monotonic() + 10
    while True:
        job = client.jobs.retrieve(job_id, **project).job
        if job.status in ("success", "failure", "canceled") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_every_shipped_model_is_described_as_the_sdk_requires(client: sdk.Scenario) -> None:
    """GET /models/{id} for each shipped schema validates as the SDK's ModelRetrieveResponse."""
    from batchgen.store.schemas import shipped, shipped_ids

    for model_id in shipped_ids():
        model = client.models.retrieve(model_id).model
        schema = shipped(model_id)
        assert schema is not None and model.id == model_id
        assert [(i.name, i.type) for i in model.inputs or []] == [(i.name, i.type) for i in schema.inputs]


MAGIC = {
    "audio/wav": (b"RIFF",),
    "audio/mpeg": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"),
    "audio/ogg": (b"OggS",),
}


def test_every_shipped_model_generates_through_the_sdk(client: sdk.Scenario) -> None:
    """generate.run_model per shipped model: its schema's required inputs, its shortest duration;
    the asset comes back in the container the model's output format asks for."""
    from batchgen.store.schemas import shipped, shipped_ids

    for model_id in shipped_ids():
        schema = shipped(model_id)
        assert schema is not None
        body: dict[str, object] = {i.name: "a short test sound" for i in schema.inputs if i.required.always}
        if schema.input("prompt") is not None:
            body["prompt"] = "a short test sound"  # MusicGen's rules want one unless inputAudio is given
        for name in ("duration", "durationSeconds"):
            spec = schema.input(name)
            if spec is not None:
                body[name] = max(spec.min or 1, 1)
        created = client.generate.run_model(model_id, body=body)
        job = wait_for_job(client, created.job.job_id)
        assert job.status == "success", model_id
        asset = client.assets.retrieve(job.metadata.asset_ids[0]).asset  # type: ignore[attr-defined]
        expected = "audio/mpeg" if schema.input("outputFormat") is not None else "audio/wav"
        assert asset.mime_type == expected, model_id
        assert httpx.get(asset.url).content.startswith(MAGIC[expected]), model_id
    with pytest.raises(_sdk().BadRequestError, match="durationSeconds: must be at most 30"):
        client.generate.run_model("model_elevenlabs-sound-effects-v2", body={"text": "x", "durationSeconds": 31})


def test_generate_get_job_and_asset_validate(client: sdk.Scenario) -> None:
    """generate, get job (until success), get asset and get-bulk answer in the SDK's own shapes."""
    created = client.generate.run_model(MODEL, body=BODY)
    assert created.job.job_type == "custom" and created.creative_units_cost == 2
    job = wait_for_job(client, created.job.job_id)
    assert job.status == "success" and job.status_history[-1].status == "success"  # type: ignore[attr-defined]
    assert job.billing.cu_cost == 2 and job.metadata.input["seed"] == 5  # type: ignore[attr-defined]
    asset_id = job.metadata.asset_ids[0]  # type: ignore[attr-defined]
    asset = client.assets.retrieve(asset_id).asset
    assert asset.kind == "audio" and asset.mime_type == "audio/wav" and asset.properties.size > 44
    bulk = client.assets.get_bulk(asset_ids=[asset_id, "asset_unknown"])
    assert [a.id for a in bulk.assets] == [asset_id]
    assert httpx.get(asset.url).content[:4] == b"RIFF"


@pytest.mark.parametrize("mode", ["true", "api"])
def test_dry_run_in_both_forms_prices_without_a_job(client: sdk.Scenario, url: str, mode: str) -> None:
    """dryRun=true and dryRun=api answer 269 with creativeUnitsCost, typed as the SDK types them; no job is made."""
    before = httpx.get(url.removesuffix("/v1") + "/__stats").json()["jobs"]
    raw = client.generate.with_raw_response.run_model(MODEL, body=BODY, dry_run=mode)  # type: ignore[arg-type]
    assert raw.status_code == 269
    priced = raw.parse()
    assert priced.creative_units_cost == 2 and priced.cost_details is not None
    assert httpx.get(url.removesuffix("/v1") + "/__stats").json()["jobs"] == before


def test_list_jobs_pages_with_tokens_and_one_status(client: sdk.Scenario) -> None:
    """Pages of at most pageSize, newest first, a token while more remain; status is one value."""
    ids = [client.generate.run_model(MODEL, body={**BODY, "seed": 100 + i}).job.job_id for i in range(5)]
    seen: list[str] = []
    page = client.jobs.list(page_size=2)
    while True:
        assert len(page.jobs) <= 2
        seen += [j.job_id for j in page.jobs]
        if not page.next_pagination_token:
            break
        page = client.jobs.list(page_size=2, pagination_token=page.next_pagination_token)
    assert seen[:5] == ids[::-1]  # newest first
    for job_id in ids:
        wait_for_job(client, job_id)
    done = client.jobs.list(status="success", page_size=100)
    assert {j.status for j in done.jobs} == {"success"} and set(ids) <= {j.job_id for j in done.jobs}
    with pytest.raises(_sdk().BadRequestError):
        client.jobs.list(status="success", created_after="2026-01-01T00:00:00.000Z")


def test_cancel_a_running_job(client: sdk.Scenario) -> None:
    """The cancel action answers the job, canceled."""
    job_id = client.generate.run_model(MODEL, body={**BODY, "seed": 77, "duration": 30}).job.job_id
    canceled = client.jobs.trigger_action(job_id, action="cancel")
    assert canceled.job.status == "canceled"


def test_upload_create_complete_retrieve(client: sdk.Scenario, tmp_path: Path) -> None:
    """Create, PUT the part, complete, then retrieve until imported: entityId is a usable asset."""
    data = render("theme", 1, 1.0, 1)
    made = client.uploads.create(
        file_name="theme.wav", file_size=len(data), content_type="audio/wav", kind="audio", parts=1
    )
    upload = made.upload
    assert upload.status == "pending" and upload.parts
    assert httpx.put(upload.parts[0].url, content=data, headers={"Content-Type": "audio/wav"}).status_code == 200
    completed = client.uploads.trigger_action(upload.id, action="complete").upload
    assert completed.status in ("validating", "imported") and completed.job_id is None
    deadline = time.monotonic() + 10
    while (current := client.uploads.retrieve(upload.id).upload).status != "imported":
        assert current.status != "failed" and time.monotonic() < deadline
        time.sleep(0.05)
    assert current.entity_id
    assert client.assets.retrieve(current.entity_id).asset.properties.size == len(data)
    job = client.generate.run_model(MODEL, body={**BODY, "inputAudio": current.entity_id})
    assert job.job.metadata.input["inputAudio"] == current.entity_id


def test_every_call_in_a_project_stays_in_it(client: sdk.Scenario) -> None:
    """projectId on every call: a job made in a project is found there, and only there."""
    job_id = client.generate.run_model(MODEL, body={**BODY, "seed": 9001}, project_id=PROJECT).job.job_id
    job = wait_for_job(client, job_id, project_id=PROJECT)
    assert job.owner_id == PROJECT  # type: ignore[attr-defined]
    assert job_id in {j.job_id for j in client.jobs.list(project_id=PROJECT, page_size=100).jobs}
    assert job_id not in {j.job_id for j in client.jobs.list(page_size=100).jobs}
    with pytest.raises(_sdk().NotFoundError):
        client.jobs.retrieve(job_id)

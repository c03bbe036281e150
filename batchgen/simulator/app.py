"""A Scenario-compatible server: the API contract of SPEC section 4 on 127.0.0.1.

Jobs move through the real statuses over a configurable time, assets are real WAV files
served from signed, expiring URLs with Range support, and `Faults` injects the failures
batchgen must survive. `GET /__stats` tells tests what the server saw.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import concurrent.futures
import functools
import hashlib
import hmac
import io
import itertools
import math
import multiprocessing
import secrets
import time
import wave
from array import array
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from ..core.params import MODEL_ID, channels, check_params
from . import shapes
from .audio import SAMPLE_RATE, render, spoil, wav16, wav_size
from .faults import Faults

JOB_STATUSES = ("canceled", "failure", "finalizing", "in-progress", "pending", "queued", "success", "warming-up")

# Stand-in price list, not Scenario's: creative units per second of audio, by model.
CU_PER_SECOND = {"stereo-melody-large": 1.0, "stereo-large": 0.9, "melody-large": 0.7, "large": 0.6}
MBD_SURCHARGE = 1.25  # multi-band diffusion decodes more slowly


def price(params: dict[str, Any]) -> float:
    """Creative units for one generation in the simulator's stand-in cost model."""
    model = params.get("modelVersion", "stereo-melody-large")
    duration = float(params.get("duration", 8))
    cost = duration * CU_PER_SECOND.get(model, 1.0)
    if params.get("multiBandDiffusion"):
        cost *= MBD_SURCHARGE
    return float(math.ceil(cost))


@dataclass(slots=True)
class SimAsset:
    id: str
    prompt: str
    seed: int
    duration: float
    channels: int
    data: bytes | None = None  # rendered on first use, then kept
    job: SimJob | None = None  # the generate job that makes it; None for uploads
    project: str | None = None
    created: float = 0.0
    # A continuation: the input asset and the region of it (seconds) the output begins with.
    source: tuple[str, float, float] | None = None
    key_seed: int | None = None  # key and tempo of what a continuation continues
    depth: int = 1  # which hop of a chain it is: 1, or one more than what it continues
    spoil: str | None = None  # the `bad_hop` fault's kind, when this output comes back wrong
    clean: bytes | None = None  # a spoiled output as it was made: what a continuation of it continues

    @property
    def mime(self) -> str:
        return "audio/mpeg" if self.spoil in ("mp3", "undecodable") else "audio/wav"

    @property
    def etag(self) -> str:
        assert self.data is not None
        return '"' + hashlib.sha256(self.data).hexdigest()[:20] + '"'


@dataclass(slots=True)
class SimUpload:
    id: str
    file_name: str
    size: object
    content_type: object
    created: float
    updated: float = 0.0
    status: str = "pending"
    part_url: str = ""
    data: bytes | None = None
    completed: float = 0.0  # loop time of `complete`
    asset_id: str | None = None
    job_id: str | None = None
    error: str | None = None
    project: str | None = None


@dataclass(slots=True)
class SimJob:
    id: str
    kind: str  # "generate" or "upload"
    params: dict[str, Any]
    created_wall: float
    started: float  # loop time
    job_time: float
    cost: float
    fails: bool = False
    refundable: bool = True
    error: str | None = None
    stuck: bool = False
    canceled: bool = False
    canceled_wall: float | None = None
    project: str | None = None
    discount: float = 0.0
    asset_ids: list[str] = field(default_factory=list)

    def status(self, now: float) -> tuple[str, float]:
        if self.canceled:
            return "canceled", 0.0
        elapsed = now - self.started
        t = elapsed / self.job_time if self.job_time > 0 else 1.0
        if self.stuck:
            t = min(t, 0.5)
        if t < 0.1:
            return "queued", 0.0
        if t < 0.9:
            return "in-progress", round((t - 0.1) / 0.8, 3)
        if t < 1.0:
            return "finalizing", 1.0
        return ("failure" if self.fails else "success"), 1.0


class Simulator:
    """The simulator's state and routes. `app` is an aiohttp Application to serve."""

    def __init__(
        self,
        *,
        key: str = "sim-key",
        secret: str = "sim-secret",
        job_time: float = 3.0,
        faults: Faults | None = None,
        fast_audio: bool = False,
    ) -> None:
        self.key, self.secret = key, secret
        self.job_time = job_time
        # Benchmarks: one cached tone per (duration, channels) instead of a piece per
        # prompt and seed, so rendering does not compete with the client for the CPU.
        self.fast_audio = fast_audio
        self.faults = faults or Faults()
        self._url_key = secrets.token_bytes(16)
        self.jobs: dict[str, SimJob] = {}
        self.assets: dict[str, SimAsset] = {}
        self.uploads: dict[str, SimUpload] = {}
        self.upload_time = min(0.3, job_time)  # seconds an upload stays `validating`
        self._ids = itertools.count(1)
        self._active: list[SimJob] = []
        self._arrivals: deque[float] = deque()  # rate-counted arrivals inside the window (loop clock)
        self._style = itertools.cycle(("seconds", "date", "ms", "body"))
        # What tests read back through /__stats.
        self.requests: Counter[str] = Counter()
        self.submit_times: list[float] = []
        self.rate_arrivals: list[float] = []  # every rate-counted arrival (loop clock), refused ones too
        self.listed_after: list[float] = []  # each listing's createdAfter, as epoch seconds
        self.max_active = 0
        self.dry_runs = 0
        self.dry_run_in_body = 0
        self.bytes_served = 0
        self.downloads_complete: Counter[str] = Counter()
        self.charged = 0.0
        self.projects: Counter[str | None] = Counter()  # projectId of each API request (None: none given)
        self.app = self._build()

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_post("/v1/generate/custom/{model}", self.generate)
        r.add_get("/v1/jobs/{job_id}", self.get_job)
        r.add_post("/v1/jobs/{job_id}/action", self.job_action)
        r.add_get("/v1/jobs", self.list_jobs)
        r.add_get("/v1/assets/{asset_id}", self.get_asset)
        r.add_post("/v1/assets/get-bulk", self.get_assets)
        r.add_post("/v1/uploads", self.create_upload)
        r.add_get("/v1/uploads/{upload_id}", self.get_upload)
        r.add_post("/v1/uploads/{upload_id}/action", self.upload_action)
        r.add_put("/upload-parts/{upload_id}/{part}", self.put_part)
        r.add_get("/cdn/{asset_id}/{filename}", self.cdn)
        r.add_get("/__stats", self.stats_handler)
        return app

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}{secrets.token_hex(3)}"

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/v1/"):
            return await handler(request)  # CDN, upload parts, stats: no API auth
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else path
        self.requests[f"{request.method} {route}"] += 1
        self.projects[request.query.get("projectId")] += 1
        if not check_basic(request.headers.get("Authorization", ""), self.key, self.secret):
            return _error(401, "Unauthorized: invalid API key or secret")
        faults = self.faults
        if faults.jitter > 0:
            await asyncio.sleep(faults.rng.uniform(0.0, faults.jitter))  # the network's share of the trip
        counted = request.method == "POST" and route == "/v1/generate/custom/{model}"
        if counted and (refusal := self._over_rate()) is not None:
            return refusal
        if faults.roll("drop", faults.drop_rate):
            # Half of the drops on a submit happen after the job exists: the answer is lost
            # but the job runs (and is billed). That is the window batchgen must reconcile.
            is_submit = request.method == "POST" and "/generate/" in path and "dryRun" not in request.query
            if is_submit and self.faults.rng.random() < 0.5:
                self.faults.injected["drop-after-create"] += 1
                await handler(request)
            _drop(request)
        if faults.roll("error", faults.error_rate):
            status = faults.rng.choice((500, 503))
            headers = {"Retry-After": "0"} if status == 503 else {}
            return _error(status, "Internal error" if status == 500 else "Service unavailable", headers)
        return await handler(request)

    def _active_count(self) -> int:
        now = self.now()
        self._active = [j for j in self._active if j.status(now)[0] not in ("success", "failure", "canceled")]
        return len(self._active)

    def _over_rate(self) -> web.Response | None:
        """Count this arrival; 429 when the window ending now holds more than the limit.

        Every arrival counts, the refused ones too, and the window is closed at both ends:
        an API may count as strictly as that, so the simulator does (a lenient one would
        hide a client that bunches its requests)."""
        now = self.now()
        self.rate_arrivals.append(now)
        faults, arrivals = self.faults, self._arrivals
        if faults.rate_limit is None:
            return None
        window = faults.rate_window
        arrivals.append(now)
        while arrivals and now - arrivals[0] > window:
            arrivals.popleft()
        if len(arrivals) <= faults.rate_limit:
            return None
        faults.injected["rate-limit"] += 1
        return self._rate_limited(window - (now - arrivals[-faults.rate_limit]))  # when R back drops out

    def _too_many(self) -> web.Response | None:
        faults = self.faults
        if faults.action_limit is not None and self._active_count() >= faults.action_limit:
            faults.injected["action-limit"] += 1
            return _error(
                429,
                "Too many concurrent jobs",
                body_extra={"details": {"actionLimit": faults.action_limit}},
                headers={"Retry-After": "1"},
            )
        return None

    def _rate_limited(self, wait: float) -> web.Response:
        style = self.faults.retry_style
        if style == "mixed":
            style = next(self._style)
        if style == "seconds":
            return _error(429, "Rate limit exceeded", {"Retry-After": str(max(1, math.ceil(wait)))})
        if style == "date":
            when = datetime.fromtimestamp(time.time() + max(1.0, wait), UTC)
            return _error(429, "Rate limit exceeded", {"Retry-After": format_datetime(when, usegmt=True)})
        if style == "ms":
            return _error(429, "Rate limit exceeded", {"retry-after-ms": str(int(wait * 1000) + 1)})
        return _error(429, "Rate limit exceeded", body_extra={"remainingSeconds": round(wait, 3)})

    async def generate(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != MODEL_ID:
            return _error(404, f"model {request.match_info['model']} not found")
        body = await _json_body(request)
        if body is None:
            return _error(400, "body must be a JSON object")
        dry_run = request.query.get("dryRun")
        if dry_run not in (None, "true", "api"):
            return _error(400, "dryRun must be true or api")
        if "dryRun" in body:
            self.dry_run_in_body += 1  # ignored, as the real API does: a paid job runs
            body = {k: v for k, v in body.items() if k != "dryRun"}
        if problems := self._problems(body):
            return _error(400, "; ".join(f"{f}: {m}" for f, m in problems))
        cost = price(body)
        discount = round(cost * self.faults.discount, 3)
        if dry_run is not None:
            self.dry_runs += 1
            if self.faults.dry_run_delay:
                await asyncio.sleep(self.faults.dry_run_delay)
            # The SDK types a dry run's answer as a generate answer, job included: the job
            # that would run, never stored. batchgen reads only creativeUnitsCost from it.
            estimate = SimJob(f"dryrun_{secrets.token_hex(4)}", "generate", body, time.time(), self.now(), 1.0, cost)
            answer = {"job": self._job_json(estimate), **_charged(cost, discount)}
            return web.json_response(answer, status=269)
        if (refusal := self._too_many()) is not None:
            return refusal
        if self.faults.quota is not None and len(self.submit_times) >= self.faults.quota:
            self.faults.injected["quota"] += 1
            return _error(429, "Daily quota exhausted", {"Retry-After": "86400"})
        job = self._create_job(body, cost, request.query.get("projectId"), discount)
        if self.faults.submit_delay:
            await asyncio.sleep(self.faults.submit_delay)  # widens the POST-to-journal window
        return web.json_response({"job": self._job_json(job), **_charged(cost, discount)})

    def _problems(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """Why the API would refuse this body (the manifest's own rules, plus what only the API knows)."""
        problems = check_params(body)
        audio_id = body.get("inputAudio")
        if audio_id is not None and audio_id not in self.assets:
            problems.append(("inputAudio", f"asset {audio_id} not found"))
        prompt = str(body.get("prompt", "")).lower()
        if any(word in prompt for word in self.faults.refuse_prompts):
            problems.append(("prompt", "flagged by content moderation (simulated)"))
        return problems

    def _create_job(self, body: dict[str, Any], cost: float, project: str | None, discount: float) -> SimJob:
        """A job (billed) and the asset it will make."""
        now = self.now()
        self.submit_times.append(now)
        job = SimJob(
            id=self._id("job"),
            kind="generate",
            params=body,
            created_wall=time.time(),
            started=now,
            job_time=self.job_time,
            cost=cost - discount,
            fails=self.faults.roll("job-failure", self.faults.failure_rate)
            or (self.faults.fail_continuations and body.get("continuation") is True),
            refundable=not self.faults.no_refund,
            stuck=self.faults.roll("stuck", self.faults.stuck_rate),
            project=project,
            discount=discount,
        )
        seed = body.get("seed")
        source = self.assets.get(body["inputAudio"]) if body.get("continuation") and body.get("inputAudio") else None
        asset = SimAsset(
            id=self._id("asset"),
            prompt=str(body.get("prompt", "")),
            seed=int(seed) if isinstance(seed, int) and seed >= 0 else secrets.randbelow(2**31),
            duration=float(body.get("duration", 8)),
            channels=channels(body),
            job=job,
            project=project,
            created=job.created_wall + job.job_time,
        )
        if source is not None:
            start = float(body.get("continuationStart", 0) or 0)
            end = float(body.get("continuationEnd", source.duration) or source.duration)
            asset.source = (source.id, start, end)
            asset.key_seed = source.key_seed if source.key_seed is not None else source.seed
            asset.depth = source.depth + 1
        faults = self.faults
        if faults.bad_hop == asset.depth and faults.injected["bad-hop"] < faults.bad_hop_times:
            faults.injected["bad-hop"] += 1
            asset.spoil = faults.bad_hop_kind
        job.asset_ids.append(asset.id)
        self.assets[asset.id] = asset
        self.jobs[job.id] = job
        self._active.append(job)
        self.max_active = max(self.max_active, self._active_count())
        return job

    def _job_json(self, job: SimJob) -> dict[str, Any]:
        """A job in the SDK's `Job` shape (strict validation passes on it)."""
        status, progress = job.status(self.now())
        order = ["queued", "in-progress", "finalizing", "failure" if status == "failure" else "success"]
        passed = order[: order.index(status) + 1] if status in order else ["queued", "canceled"]
        return shapes.job(
            job.id,
            kind=job.kind,
            status=status,
            progress=progress,
            history=[(name, self._changed_at(job, name)) for name in passed],
            params=job.params,
            asset_ids=job.asset_ids,
            cost=job.cost,
            refundable=job.refundable,
            error=job.error,
            created=job.created_wall,
            updated=self._changed_at(job, status),
            discount=job.discount,
            owner=job.project,
        )

    def _changed_at(self, job: SimJob, status: str) -> float:
        """Wall time of the job's last change of status (finished jobs do not move on)."""
        shares = {"queued": 0.0, "in-progress": 0.1, "finalizing": 0.9, "success": 1.0, "failure": 1.0}
        if status == "canceled":
            return job.canceled_wall or job.created_wall
        return job.created_wall + shares.get(status, 0.0) * job.job_time

    def _job(self, request: web.Request) -> SimJob | None:
        """The job the path names, if it exists in the request's project."""
        job = self.jobs.get(request.match_info["job_id"])
        return job if job is not None and job.project == request.query.get("projectId") else None

    async def get_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _error(404, "job not found")
        return web.json_response({"job": self._job_json(job)})

    async def job_action(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return _error(404, "job not found")
        body = await _json_body(request) or {}
        if body.get("action") != "cancel":
            return _error(400, f"unknown action {body.get('action')!r}")
        if job.status(self.now())[0] in ("success", "failure", "canceled"):
            return _error(400, "job already finished; cannot cancel")
        job.canceled, job.canceled_wall = True, time.time()
        return web.json_response({"job": self._job_json(job)})

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            size = max(1, min(100, int(q.get("pageSize", "20"))))
            offset = int((q.get("paginationToken") or "0").split(".")[0])
        except ValueError:
            return _error(400, "bad pageSize or paginationToken")
        wanted = q.get("status") or None
        if wanted is not None and wanted not in JOB_STATUSES:
            return _error(400, f"status must be one of {', '.join(JOB_STATUSES)}")
        if wanted is not None and q.get("createdAfter"):
            return _error(400, "createdAfter cannot be combined with status")
        after = _parse_iso(q["createdAfter"]) if q.get("createdAfter") else None
        if after is not None:
            self.listed_after.append(after)
        if self.faults.short_pages:  # as the SDK allows: fewer jobs than asked, even none
            size = self.faults.rng.choice((0, 1, max(1, size // 3), size))
        now = self.now()
        matched = 0
        page: list[dict[str, Any]] = []
        more = False
        # Jobs are kept in creation order: walk newest first and stop at createdAfter.
        project = q.get("projectId")
        for job in reversed(self.jobs.values()):
            if after is not None and job.created_wall <= after:
                break
            if job.project != project or (wanted is not None and job.status(now)[0] != wanted):
                continue
            if matched >= offset + size:
                more = True
                break
            if matched >= offset:
                data = self._job_json(job)
                if self.faults.list_hides_input:
                    data["metadata"].pop("input", None)
                page.append(data)
            matched += 1
        out: dict[str, Any] = {"jobs": page}
        if more:  # opaque to clients; never the same twice, even for an empty page
            out["nextPaginationToken"] = f"{offset + size}.{next(self._ids)}"
        return web.json_response(out)

    def _asset_json(self, request: web.Request, asset: SimAsset) -> dict[str, Any]:
        """An asset in the SDK's `Asset` shape, with a freshly signed URL."""
        # Size is known without rendering; audio is made on first download only.
        size = len(asset.data) if asset.data is not None else wav_size(asset.duration, asset.channels)
        ttl = -1.0 if self.faults.roll("expired-url", self.faults.expired_rate) else self.faults.url_ttl
        expires = int(time.time() + ttl)
        base = f"{request.scheme}://{request.host}"
        return shapes.asset(
            asset.id,
            url=f"{base}/cdn/{asset.id}/{asset.id}{'.mp3' if asset.mime == 'audio/mpeg' else '.wav'}"
            f"?expires={expires}&sig={self._sign(asset.id, expires)}",
            mime=asset.mime,
            size=size,
            duration=asset.duration,
            channels=asset.channels,
            rate=SAMPLE_RATE,
            uploaded=asset.job is None,
            created=asset.created,
            owner=asset.project,
        )

    async def _bytes(self, asset: SimAsset) -> bytes:
        if asset.data is None and self.fast_audio and asset.source is None:
            asset.data = _tone(asset.duration, asset.channels)
        if asset.data is None:
            data = await (self._continued(asset) if asset.source else self._render(asset, asset.duration))
            if asset.spoil is not None:
                asset.clean, data = data, await asyncio.to_thread(spoil, data, asset.spoil)
            if asset.data is None:
                asset.data = data
        return asset.data

    async def _render(self, asset: SimAsset, seconds: float) -> bytes:
        # Rendering is pure Python: in a thread it would hold the GIL and stall the loop
        # (skewing every timing the simulator records), so it runs in a process.
        args = (asset.prompt, asset.seed, seconds, asset.channels, asset.key_seed)
        try:
            return await asyncio.get_running_loop().run_in_executor(_render_pool(), render, *args)
        except (RuntimeError, OSError, concurrent.futures.process.BrokenProcessPool):
            # No worker processes here (a script without a __main__ guard, a sandbox that
            # forbids them): render in a thread, slower timings but the same bytes.
            return await asyncio.to_thread(render, *args)

    async def _continued(self, asset: SimAsset) -> bytes:
        """A continuation, as audiocraft and Replicate's cog make it: the prompt region of the
        input, then new audio in the same key and tempo, `duration` in all. With the
        `continuation_new_only` fault, only the new audio."""
        assert asset.source is not None
        source_id, start, end = asset.source
        source = self.assets[source_id]
        data = await self._bytes(source)
        region = _region(source.clean or data, start, end, asset.channels)
        if region is None or self.faults.continuation_new_only:
            seconds = asset.duration - (end - start) if region is not None else asset.duration
            return await self._render(asset, max(1.0, seconds))
        prompt_frames = len(region) // (2 * asset.channels)
        new = await self._render(asset, max(1.0 / SAMPLE_RATE, asset.duration - prompt_frames / SAMPLE_RATE))
        return wav16(region + new[44:], asset.channels)

    def _sign(self, asset_id: str, expires: int) -> str:
        return hmac.new(self._url_key, f"{asset_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def _visible(self, asset_id: object, project: str | None) -> SimAsset | None:
        """An asset exists for clients only once its job succeeded (or it was uploaded), in its project."""
        asset = self.assets.get(asset_id) if isinstance(asset_id, str) else None
        if asset is None or asset.project != project:
            return None
        if asset.job is not None and asset.job.status(self.now())[0] != "success":
            return None
        return asset

    async def get_asset(self, request: web.Request) -> web.Response:
        asset = self._visible(request.match_info["asset_id"], request.query.get("projectId"))
        if asset is None:
            return _error(404, "asset not found")
        if asset.source is not None or asset.spoil is not None:
            await self._bytes(asset)  # its size depends on what it continues
        return web.json_response({"asset": self._asset_json(request, asset)})

    async def get_assets(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = body.get("assetIds") if body is not None else None
        if not isinstance(ids, list) or len(ids) > 200:
            return _error(400, "assetIds must be a list of at most 200 ids")
        project = request.query.get("projectId")
        found = [a for a in (self._visible(i, project) for i in ids) if a is not None]
        for asset in found:
            if asset.source is not None or asset.spoil is not None:
                await self._bytes(asset)  # its size depends on what it continues
        return web.json_response({"assets": [self._asset_json(request, a) for a in found]})

    async def create_upload(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body is None or body.get("kind") != "audio" or not isinstance(body.get("fileName"), str):
            return _error(400, "kind must be audio and fileName is required")
        upload_id = self._id("upload")
        upload = SimUpload(upload_id, body["fileName"], body.get("fileSize"), body.get("contentType"), time.time())
        upload.project, upload.updated = request.query.get("projectId"), upload.created
        self.uploads[upload_id] = upload
        base = f"{request.scheme}://{request.host}"
        upload.part_url = f"{base}/upload-parts/{upload_id}/1"
        return web.json_response({"upload": self._upload_json(upload)})

    def _upload_json(self, upload: SimUpload) -> dict[str, Any]:
        """An upload in the SDK's `Upload` shape; `validating` for a moment after complete, then `imported`."""
        if upload.status == "validating" and self.now() - upload.completed >= self.upload_time:
            self._import(upload)
        pending = upload.status == "pending"
        return shapes.upload(
            upload.id,
            file_name=upload.file_name,
            status=upload.status,
            created=upload.created,
            updated=upload.updated,
            size=upload.size,
            content_type=upload.content_type,
            part_url=upload.part_url if pending else None,
            part_expires=time.time() + 3600 if pending else None,
            entity_id=upload.asset_id,
            job_id=upload.job_id,
            error=upload.error,
            owner=upload.project,
        )

    def _import(self, upload: SimUpload) -> None:
        data = upload.data or b""
        if not (data[:4] == b"RIFF" and data[8:12] == b"WAVE"):
            upload.status, upload.error = "failed", "the file is not audio this service can read"
        else:
            asset = SimAsset(id=self._id("asset"), prompt="", seed=0, duration=0.0, channels=1, data=data)
            asset.project, asset.created = upload.project, time.time()
            self.assets[asset.id] = asset
            upload.status, upload.asset_id = "imported", asset.id
        upload.updated = time.time()

    async def put_part(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["upload_id"])
        if upload is None:
            return web.Response(status=404)
        if "Authorization" in request.headers:
            return web.Response(status=400, text="signed URLs take no Authorization header")
        upload.data = await request.read()
        return web.Response(status=200, headers={"ETag": '"part-1"'})

    async def get_upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["upload_id"])
        if upload is None or upload.project != request.query.get("projectId"):
            return _error(404, "upload not found")
        return web.json_response({"upload": self._upload_json(upload)})

    async def upload_action(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["upload_id"])
        if upload is None or upload.project != request.query.get("projectId"):
            return _error(404, "upload not found")
        body = await _json_body(request)
        if body is None or body.get("action") != "complete":
            return _error(400, "unknown action")
        if upload.data is None:
            return _error(400, "upload has no parts yet")
        if upload.status == "pending":
            upload.status, upload.completed, upload.updated = "validating", self.now(), time.time()
            if self.faults.upload_job:  # the older flow: a job that imports the file
                self._import(upload)
                job = SimJob(
                    id=self._id("job"),
                    kind="upload",
                    params={"fileName": upload.file_name},
                    created_wall=time.time(),
                    started=self.now(),
                    job_time=min(self.job_time, 0.2),
                    cost=0.0,
                    asset_ids=[upload.asset_id] if upload.asset_id else [],
                )
                self.jobs[job.id] = job
                upload.job_id, upload.status = job.id, "complete"
        return web.json_response({"upload": self._upload_json(upload)})

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        self.requests["GET /cdn"] += 1
        asset = self.assets.get(request.match_info["asset_id"])
        if "Authorization" in request.headers:
            # As S3-style storage does: a signed URL plus an auth header is refused.
            return web.Response(status=400, text="Only one auth mechanism allowed")
        try:
            expires = int(request.query.get("expires", "0"))
        except ValueError:
            expires = 0
        if asset is None or not hmac.compare_digest(request.query.get("sig", ""), self._sign(asset.id, expires)):
            return web.Response(status=403, text="AccessDenied: bad signature")
        if time.time() > expires:
            self.faults.injected["url-expired-seen"] += 1
            return web.Response(status=403, text="AccessDenied: Request has expired")
        data = await self._bytes(asset)
        if self.faults.roll("html", self.faults.html_rate):
            return web.Response(
                status=200, content_type="text/html", text="<html><body>Service Unavailable</body></html>"
            )
        if self.faults.roll("oversize", self.faults.oversize_rate):
            data = data + bytes(len(data))  # a misbehaving origin: twice what the asset declared
        start, status = 0, 200
        headers = {"Content-Type": asset.mime, "ETag": asset.etag, "Accept-Ranges": "bytes"}
        range_header = None if self.faults.ignore_range else request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if range_header and (if_range is None or if_range == asset.etag):
            try:
                unit, spec = range_header.split("=", 1)
                start = int(spec.split("-", 1)[0])
            except ValueError:
                return web.Response(status=416)
            if unit != "bytes" or start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        truncate = self.faults.roll("truncate", self.faults.truncate_rate) and len(body) > 64
        cut = len(body) // 2 if truncate else len(body)
        try:
            await self._send(resp, body[:cut])
        except ConnectionResetError:
            return resp  # the client hung up (a cancelled download): nothing to tell it
        self.bytes_served += cut
        if truncate:
            _drop(request)
            return resp
        self.downloads_complete[asset.id] += 1
        await resp.write_eof()
        return resp

    async def _send(self, resp: web.StreamResponse, body: bytes, step: int = 65536) -> None:
        """Write a body in chunks at the bandwidth fault's pace."""
        pause = step / self.faults.bandwidth if self.faults.bandwidth else 0.0
        for offset in range(0, len(body), step):
            # The wait comes before each chunk: a pause after the last one would hold the
            # connection after the client has every byte, and the client's next request on
            # it (kept alive, back in its pool) would sit unread until the pause ends.
            if pause:
                await asyncio.sleep(pause)
            await resp.write(body[offset : offset + step])

    def stats(self) -> dict[str, Any]:
        """What the server saw: requests, submissions, jobs and injected faults."""
        jobs = [
            {
                "id": j.id,
                "kind": j.kind,
                "status": self._job_json(j)["status"],
                "params": j.params,
                "cost": j.cost,
                "created": j.created_wall,
            }
            for j in self.jobs.values()
        ]
        charged = sum(
            j.cost
            for j in self.jobs.values()
            if j.kind == "generate" and (j.status(self.now())[0] == "success" or (j.fails and not j.refundable))
        )
        return {
            "requests": dict(self.requests),
            "submit_times": self.submit_times,
            "rate_arrivals": self.rate_arrivals,
            "max_active": self.max_active,
            "jobs": jobs,
            "dry_runs": self.dry_runs,
            "dry_run_in_body": self.dry_run_in_body,
            "faults": dict(self.faults.injected),
            "bytes_served": self.bytes_served,
            "downloads_complete": dict(self.downloads_complete),
            "charged": charged,
        }

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())


@functools.lru_cache(maxsize=64)
def _tone(duration: float, channels: int) -> bytes:
    """A plain 440 Hz tone as a valid WAV, for --fast-audio."""
    frames = max(1, int(16000 * duration))
    period = [int(12000 * math.sin(2 * math.pi * 440 * i / 16000)) for i in range(400)]  # 40 periods of 440 Hz
    samples = array("h", (period * (frames // 400 + 1))[:frames])
    if channels == 2:
        both = array("h", [0]) * (2 * frames)
        both[0::2] = samples
        both[1::2] = samples
        samples = both
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


_POOL: concurrent.futures.ProcessPoolExecutor | None = None


def _render_pool() -> concurrent.futures.ProcessPoolExecutor:
    """One small process pool per process, shared by every simulator in it."""
    global _POOL
    if _POOL is None:
        # spawn, not fork: the simulator often runs beside other threads (tests, the CLI).
        _POOL = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
        # Shut it down before interpreter teardown, or its finalizer trips over
        # half-dismantled modules and prints a traceback at exit.
        atexit.register(_POOL.shutdown, wait=True, cancel_futures=True)
    return _POOL


def _error(
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
    body_extra: dict[str, Any] | None = None,
) -> web.Response:
    body = {"reason": reason, "trace_id": secrets.token_hex(8), **(body_extra or {})}
    return web.json_response(body, status=status, headers=headers)


def _region(data: bytes, start: float, end: float, channels: int) -> bytes | None:
    """Frames [start, end) seconds of a 16-bit, 16 kHz WAV, in `channels` channels (None: not such a WAV)."""
    if data[:4] != b"RIFF" or len(data) < 44:
        return None
    have, rate, bits = int.from_bytes(data[22:24], "little"), int.from_bytes(data[24:28], "little"), data[34]
    if rate != SAMPLE_RATE or bits != 16 or have not in (1, 2):
        return None
    pcm = data[44:]
    frames = len(pcm) // (2 * have)
    a, b = max(0, min(frames, round(start * rate))), max(0, min(frames, round(end * rate)))
    part = pcm[a * 2 * have : b * 2 * have]
    if have == channels:
        return part
    samples = array("h")
    samples.frombytes(part)
    if have == 1:  # mono prompt for a stereo model: the same on both sides
        both = array("h", [0]) * (2 * len(samples))
        both[0::2], both[1::2] = samples, samples
        return both.tobytes()
    return array("h", ((samples[i] + samples[i + 1]) // 2 for i in range(0, len(samples), 2))).tobytes()


def _charged(cost: float, discount: float) -> dict[str, Any]:
    """What a generate answer says of money (SDK `GenerateRunModelResponse`): cost after discount."""
    out: dict[str, Any] = {"creativeUnitsCost": cost - discount, "costDetails": {"custom-generation": cost - discount}}
    if discount:
        out["creativeUnitsDiscount"] = discount
    return out


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _drop(request: web.Request) -> None:
    """Close the connection without an answer, as a crashed proxy would."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


def _parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def check_basic(header: str, key: str, secret: str) -> bool:
    """True when an Authorization header carries exactly this key and secret."""
    if not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(decoded, f"{key}:{secret}")

"""Jobs: `POST /generate/custom/{model}` (dry runs too), `GET /jobs/{id}`, cancel, `GET /jobs`."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from ..core import modelrules
from ..core.params import MODEL_ID, channels, check_params
from ..core.schema import ModelSchema
from ..store.schemas import MAKES
from . import shapes
from .answers import charged, error, json_body, parse_iso
from .model import JOB_STATUSES, SimAsset, SimJob, output_format, price, seconds_of
from .world import World


class JobsApi(World):
    """Submitting, reading, cancelling and listing jobs; the rate and concurrency limits on submits."""

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
            return error(
                429,
                "Too many concurrent jobs",
                body_extra={"details": {"actionLimit": faults.action_limit}},
                headers={"Retry-After": str(math.ceil(faults.action_wait))}
                if faults.action_wait >= 1
                else {"retry-after-ms": str(round(faults.action_wait * 1000))},
            )
        return None

    def _rate_limited(self, wait: float) -> web.Response:
        style = self.faults.retry_style
        if style == "mixed":
            style = next(self._style)
        if style == "seconds":
            return error(429, "Rate limit exceeded", {"Retry-After": str(max(1, math.ceil(wait)))})
        if style == "date":
            when = datetime.fromtimestamp(time.time() + max(1.0, wait), UTC)
            return error(429, "Rate limit exceeded", {"Retry-After": format_datetime(when, usegmt=True)})
        if style == "ms":
            return error(429, "Rate limit exceeded", {"retry-after-ms": str(int(wait * 1000) + 1)})
        return error(429, "Rate limit exceeded", body_extra={"remainingSeconds": round(wait, 3)})

    async def generate(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model != MODEL_ID and self.schema(model) is None:
            return error(404, f"model {model} not found")
        body = await json_body(request)
        if body is None:
            return error(400, "body must be a JSON object")
        dry_run = request.query.get("dryRun")
        if dry_run not in (None, "true", "api"):
            return error(400, "dryRun must be true or api")
        if "dryRun" in body:
            self.dry_run_in_body += 1  # ignored, as the real API does: a paid job runs
            body = {k: v for k, v in body.items() if k != "dryRun"}
        if problems := self._problems(model, body):
            return error(400, "; ".join(f"{f}: {m}" for f, m in problems))
        cost = price(body) if model == MODEL_ID else _stand_in_price(model, body, self.schema(model))
        discount = round(cost * self.faults.discount, 3)
        if dry_run is not None:
            self.dry_runs += 1
            if self.faults.dry_run_delay:
                await asyncio.sleep(self.faults.dry_run_delay)
            # The SDK types a dry run's answer as a generate answer, job included: the job
            # that would run, never stored. batchgen reads only creativeUnitsCost from it.
            estimate = SimJob(f"dryrun_{secrets.token_hex(4)}", "generate", body, time.time(), self.now(), 1.0, cost)
            answer = {"job": self._job_json(estimate), **charged(cost, discount)}
            return web.json_response(answer, status=269)
        if (refusal := self._too_many()) is not None:
            return refusal
        if self.faults.quota is not None and len(self.submit_times) >= self.faults.quota:
            self.faults.injected["quota"] += 1
            return error(429, "Daily quota exhausted", {"Retry-After": "86400"})
        job = self._create_job(body, cost, request.query.get("projectId"), discount, model)
        if self.faults.submit_delay:
            await asyncio.sleep(self.faults.submit_delay)  # widens the POST-to-journal window
        return web.json_response({"job": self._job_json(job), **charged(cost, discount)})

    def _problems(self, model: str, body: dict[str, Any]) -> list[tuple[str, str]]:
        """Why the API would refuse this body: the model's schema (MusicGen: the manifest's own
        rules, which include it), plus what only the API knows."""
        schema = self.schema(model)
        if model == MODEL_ID or schema is None:
            problems = check_params(body)
        else:
            problems = schema.check(body) + modelrules.check(model, body)
        files = [i.name for i in schema.inputs if i.type in ("file", "file_array")] if schema else ["inputAudio"]
        for name in files:
            value = body.get(name)
            for asset_id in value if isinstance(value, list) else [value]:
                if isinstance(asset_id, str) and asset_id not in self.assets:
                    problems.append((name, f"asset {asset_id} not found"))
        prompt = str(body.get("prompt", "")).lower()
        if any(word in prompt for word in self.faults.refuse_prompts):
            problems.append(("prompt", "flagged by content moderation (simulated)"))
        return problems

    def _create_job(
        self, body: dict[str, Any], cost: float, project: str | None, discount: float, model: str = MODEL_ID
    ) -> SimJob:
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
            prompt=str(body.get("prompt") or body.get("text") or ""),
            seed=int(seed) if isinstance(seed, int) and seed >= 0 else secrets.randbelow(2**31),
            duration=seconds_of(model, body, _default_seconds(self.schema(model))),
            channels=channels(body) if model == MODEL_ID else 1 if "tts" in model else 2,
            job=job,
            project=project,
            created=job.created_wall + job.job_time,
            format=output_format({"outputFormat": _default(self.schema(model), "outputFormat"), **body}),
            kind=MAKES.get(model, "music"),
            loop=body.get("loop") is True,
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
            return error(404, "job not found")
        return web.json_response({"job": self._job_json(job)})

    async def job_action(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job is None:
            return error(404, "job not found")
        body = await json_body(request) or {}
        if body.get("action") != "cancel":
            return error(400, f"unknown action {body.get('action')!r}")
        if job.status(self.now())[0] in ("success", "failure", "canceled"):
            return error(400, "job already finished; cannot cancel")
        job.canceled, job.canceled_wall = True, time.time()
        return web.json_response({"job": self._job_json(job)})

    async def list_jobs(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            size = max(1, min(100, int(q.get("pageSize", "20"))))
            offset = int((q.get("paginationToken") or "0").split(".")[0])
        except ValueError:
            return error(400, "bad pageSize or paginationToken")
        wanted = q.get("status") or None
        if wanted is not None and wanted not in JOB_STATUSES:
            return error(400, f"status must be one of {', '.join(JOB_STATUSES)}")
        if wanted is not None and q.get("createdAfter"):
            return error(400, "createdAfter cannot be combined with status")
        after = parse_iso(q["createdAfter"]) if q.get("createdAfter") else None
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


def _default(schema: ModelSchema | None, name: str) -> object:
    """The default of a model's input, as its schema gives it (None: no such input, or no default)."""
    spec = schema.input(name) if schema is not None else None
    return spec.default if spec is not None else None


def _default_seconds(schema: ModelSchema | None) -> float:
    """The length of a model's output when the request names none: its schema's duration default."""
    for key in ("duration", "durationSeconds"):
        value = _default(schema, key)
        if isinstance(value, int | float):
            return float(value)
    return 8.0


def _stand_in_price(model: str, body: dict[str, Any], schema: ModelSchema | None) -> float:
    """The simulator's price for a model other than MusicGen: a creative unit per second made."""
    return float(math.ceil(seconds_of(model, body, _default_seconds(schema))))

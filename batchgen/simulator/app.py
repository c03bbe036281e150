"""A Scenario-compatible server: the API contract of SPEC section 4 on 127.0.0.1.

Jobs move through the real statuses over a configurable time, assets are real WAV files
served from signed, expiring URLs with Range support, and `Faults` injects the failures
batchgen must survive. `GET /__stats` tells tests what the server saw.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .answers import check_basic, drop, error
from .catalog import ModelsApi
from .cdn import CdnApi
from .jobs import JobsApi
from .model import price
from .uploads import UploadsApi


class Simulator(JobsApi, UploadsApi, CdnApi, ModelsApi):
    """The simulator's routes over its state. `app` is an aiohttp Application to serve."""

    @functools.cached_property
    def app(self) -> web.Application:
        """The aiohttp Application to serve, built on first use."""
        return self._build()

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_post("/v1/generate/custom/{model}", self.generate)
        r.add_get("/v1/jobs/{job_id}", self.get_job)
        r.add_post("/v1/jobs/{job_id}/action", self.job_action)
        r.add_get("/v1/jobs", self.list_jobs)
        r.add_get("/v1/models/{model_id}", self.get_model)
        r.add_get("/v1/assets/{asset_id}", self.get_asset)
        r.add_post("/v1/assets/get-bulk", self.get_assets)
        r.add_post("/v1/uploads", self.create_upload)
        r.add_get("/v1/uploads/{upload_id}", self.get_upload)
        r.add_post("/v1/uploads/{upload_id}/action", self.upload_action)
        r.add_put("/upload-parts/{upload_id}/{part}", self.put_part)
        r.add_get("/cdn/{asset_id}/{filename}", self.cdn)
        r.add_get("/__stats", self.stats_handler)
        return app

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
            return error(401, "Unauthorized: invalid API key or secret")
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
            drop(request)
        if faults.roll("error", faults.error_rate):
            status = faults.rng.choice((500, 503))
            headers = {"Retry-After": "0"} if status == 503 else {}
            return error(status, "Internal error" if status == 500 else "Service unavailable", headers)
        return await handler(request)

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


__all__ = ["Simulator", "check_basic", "price"]

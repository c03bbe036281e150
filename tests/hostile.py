"""A misbehaving Scenario API: the simulator, with one way of answering wrongly switched on.

Each mode rewrites what the real simulator answers (it still creates and bills jobs),
so a test can check that batchgen survives it: the run ends by itself, no traceback,
nothing written outside the batch folder, no secret anywhere.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from batchgen.simulator import Simulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MODES = {
    # API answers that do not hold up
    "progress-text": "job progress is the string 'half'",
    "created-number": "createdAt and updatedAt are numbers",
    "metadata-list": "job metadata is a list",
    "cost-text": "billing.cuCost is the string '1'",
    "generate-list": "the generate answer is [] (the job was created and billed)",
    "generate-no-job": "the generate answer has only creativeUnitsCost (the job exists)",
    "job-id-path": "job ids contain ../ (a path outside /jobs)",
    "deep-json": "a poll answers JSON nested 100,000 levels",
    "gzip-bomb": "a job answer that inflates to 40 MB",
    "not-json": "polls answer HTML with status 200",
    "other-job": "a job's answer names another job (its id, status and assets)",
    "many-assets": "a finished job lists 5,000 asset ids",
    "twice-listed": "a listing holds each job twice, once still running",
    "future-status": "jobs answer a status no client knows ('rendering')",
    "negative-cost": "costs are negative (cuCost -5, a cost detail of -3, creativeUnitsCost -1)",
    "many-details": "a job's cost breakdown has 1,000 entries",
    # downloads
    "redirect-file": "asset URLs redirect to file:///etc/passwd",
    "redirect-loop": "asset URLs redirect to themselves",
    "mime-json": "assets say audio/json",
    "ogg-script": "assets say audio/ogg and hold a shell script",
    "flac-html": "assets say audio/flac and hold an HTML page",
    "trickle": "the CDN sends one byte a second",
    # time and secrets
    "retry-forever": "every submit answers 429 with Retry-After: 100000000",
    "echo-secret": "job failures echo the Authorization header in metadata.error",
    # broken Unicode
    "surrogate-reason": "job failures give a reason holding a lone surrogate (\\ud800)",
    "surrogate-details": "a job's cost breakdown has a key holding a lone surrogate (\\udc00)",
}


class HostileSimulator(Simulator):
    """The simulator with `mode` (one of MODES) switched on."""

    def __init__(self, mode: str, **kwargs: Any) -> None:
        self.mode = mode
        super().__init__(**kwargs)
        self.app.middlewares.insert(0, self._hostile)
        if mode in ("echo-secret", "surrogate-reason"):
            self.faults.failure_rate = 1.0

    @web.middleware
    async def _hostile(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        mode, path = self.mode, request.path
        if (
            mode == "retry-forever"
            and request.method == "POST"
            and "/generate/" in path
            and "dryRun" not in request.query
        ):
            return web.json_response({"reason": "slow down"}, status=429, headers={"Retry-After": "100000000"})
        if path.startswith("/cdn/"):
            return await self._cdn(request, handler)
        response = await handler(request)
        if (
            not isinstance(response, web.Response)
            or response.content_type != "application/json"
            or response.body is None
        ):
            return response
        body = json.loads(response.body)  # type: ignore[arg-type]
        changed = self._rewrite(request, body, response.status)
        if isinstance(changed, web.StreamResponse):
            return changed
        return web.json_response(changed, status=response.status, headers=_kept(response))

    def _rewrite(self, request: web.Request, body: Any, status: int) -> Any:
        mode = self.mode
        is_generate = request.method == "POST" and "/generate/" in request.path and "dryRun" not in request.query
        if is_generate and mode == "generate-list":
            return []
        if is_generate and mode == "generate-no-job":
            return {"creativeUnitsCost": body.get("creativeUnitsCost")}
        if is_generate and mode == "negative-cost" and isinstance(body, dict):
            body["creativeUnitsCost"] = -1
        is_poll = request.method == "GET" and request.path.startswith("/v1/jobs")
        if is_poll and mode == "deep-json":
            return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
        if is_poll and mode == "not-json":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if is_poll and mode == "gzip-bomb":
            data = gzip.compress(b'{"job": {"x": "' + b"A" * 40_000_000 + b'"}}')
            return web.Response(body=data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        if is_poll and mode == "twice-listed" and isinstance(body, dict) and isinstance(body.get("jobs"), list):
            body["jobs"] = [copy for job in body["jobs"] for copy in (job, {**job, "status": "in-progress"})]
        for job in _jobs(body):
            self._spoil(job)
        return body

    def _spoil(self, job: dict[str, Any]) -> None:
        mode = self.mode
        if mode == "progress-text":
            job["progress"] = "half"
        elif mode == "created-number":
            job["createdAt"], job["updatedAt"] = 12345, 67890
        elif mode == "metadata-list":
            job["metadata"] = ["not", "a", "mapping"]
        elif mode == "cost-text":
            job["billing"] = {"cuCost": "1"}
        elif mode == "job-id-path":
            job["jobId"] = "../../assets/x"
        elif mode == "other-job":
            job["jobId"] = "job_someone_else"
        elif mode == "many-assets" and job.get("status") == "success":
            ids = job.get("metadata", {}).get("assetIds") or []
            job["metadata"]["assetIds"] = (ids * 5000)[:5000] if ids else []
        elif mode == "future-status" and job.get("status") not in ("success", "failure", "canceled"):
            job["status"] = "rendering"
        elif mode == "negative-cost":
            job["billing"] = {**job.get("billing", {}), "cuCost": -5, "cuCostDetails": {"extra": -3}}
        elif mode == "many-details":
            job["billing"] = {**job.get("billing", {}), "cuCostDetails": {f"item{i}": 0.001 for i in range(1000)}}
        elif mode == "surrogate-reason" and job.get("status") == "failure":
            job["metadata"]["error"] = "model said \ud800 no"
        elif mode == "surrogate-details":
            job["billing"] = {**job.get("billing", {}), "cuCostDetails": {"gpu\udc00": 0.5}}
        elif mode == "echo-secret" and job.get("status") == "failure":
            job["metadata"]["error"] = f"worker said: Authorization: {self.auth_header}"

    @property
    def auth_header(self) -> str:
        import base64

        return "Basic " + base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()

    async def _cdn(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        mode = self.mode
        if mode == "redirect-file":
            raise web.HTTPFound("file:///etc/passwd")
        if mode == "redirect-loop":
            raise web.HTTPFound(str(request.url))
        if mode == "ogg-script":
            return web.Response(body=b"#!/bin/sh\nrm -rf ~\n", content_type="audio/ogg")
        if mode == "flac-html":
            return web.Response(body=b"<html><body>hi</body></html>", content_type="audio/flac")
        if mode == "trickle":
            resp = web.StreamResponse(headers={"Content-Type": "audio/wav", "Content-Length": "100000"})
            await resp.prepare(request)
            for _ in range(100_000):
                import asyncio

                await resp.write(b"R")
                await asyncio.sleep(1.0)
            return resp
        return await handler(request)

    def _asset_json(self, request: web.Request, asset: Any) -> dict[str, Any]:
        out = super()._asset_json(request, asset)
        if self.mode == "mime-json":
            out["mimeType"] = "audio/json"
        elif self.mode == "ogg-script":
            out["mimeType"] = "audio/ogg"
            out["properties"]["size"] = 19
        elif self.mode == "flac-html":
            out["mimeType"] = "audio/flac"
            out["properties"]["size"] = 28
        return out


def _jobs(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("job"), dict):
        return [body["job"]]
    if isinstance(body, dict) and isinstance(body.get("jobs"), list):
        return [j for j in body["jobs"] if isinstance(j, dict)]
    return []


def _kept(response: web.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() in ("retry-after", "etag")}

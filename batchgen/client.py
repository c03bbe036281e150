"""The Scenario API over one aiohttp session: requests out, typed results or errors back.

Every API call carries HTTP Basic auth; CDN downloads never do (signed URLs carry their
own authority, and storage services reject a second auth mechanism). Errors become
`ApiError`s classified as transient, permanent or credentials, with the server's retry
hints parsed from all the places Scenario puts them.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import mimetypes
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from .errors import ApiError, CredentialsError, DownloadError, ErrorKind, UsageError

DEFAULT_BASE_URL = "https://api.cloud.scenario.com/v1"
BULK_LIMIT = 200  # POST /assets/get-bulk takes at most 200 ids
TERMINAL = frozenset({"success", "failure", "canceled"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """API key and secret. repr and str never show the secret (nor the whole key)."""

    key: str
    secret: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        key = env.get("SCENARIO_API_KEY") or env.get("SCENARIO_SDK_API_KEY")
        secret = env.get("SCENARIO_API_SECRET") or env.get("SCENARIO_SDK_API_SECRET")
        if not key or not secret:
            raise UsageError(
                "no API credentials: set SCENARIO_API_KEY and SCENARIO_API_SECRET "
                "(or run with --simulate to try the built-in simulator)"
            )
        return cls(key, secret)

    @property
    def header(self) -> str:
        token = base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        return f"Basic {token}"

    def __repr__(self) -> str:
        return f"Credentials(key={self.key[:4]}..., secret=***)"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """`text` with the secret (and the key, and the auth header) removed."""
        for needle in (self.header.split(" ", 1)[1], self.secret, self.key):
            if needle:
                text = text.replace(needle, "***")
        return text


@dataclass(frozen=True, slots=True)
class Job:
    """The parts of a Scenario job batchgen uses (unknown fields are ignored)."""

    id: str
    status: str
    progress: float = 0.0
    asset_ids: tuple[str, ...] = ()
    error: str | None = None
    cost: float | None = None
    input: Mapping[str, Any] = field(default_factory=dict)
    output_entity: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Job:
        job = data.get("job", data)
        meta = job.get("metadata") or {}
        billing = job.get("billing") or {}
        output = meta.get("output") or {}
        # The API documents jobId; some responses and the SDK's models use id.
        job_id = job.get("jobId") or job.get("id")
        if not job_id:
            raise ApiError(200, "job without jobId in response", ErrorKind.TRANSIENT)
        return cls(
            id=str(job_id),
            status=str(job.get("status", "queued")),
            progress=float(job.get("progress") or 0.0),
            asset_ids=tuple(meta.get("assetIds") or ()),
            error=meta.get("error") or meta.get("hint"),
            cost=billing.get("cuCost"),
            input=meta.get("input") or {},
            output_entity=output.get("entityId") if isinstance(output, dict) else None,
            created_at=job.get("createdAt"),
            updated_at=job.get("updatedAt"),
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """What a generate POST answered: the job, and the cost the API quoted."""

    job: Job
    cost: float | None


@dataclass(frozen=True, slots=True)
class Asset:
    """An asset's download URL and what the API says of its content."""

    id: str
    url: str
    mime_type: str
    size: int | None = None
    duration: float | None = None
    channels: int | None = None
    status: str = "success"
    checksum: str | None = None  # sha256 hex when the API gives one

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Asset:
        asset = data.get("asset", data)
        props = asset.get("properties") or {}
        size = props.get("size")
        return cls(
            id=str(asset["id"]),
            url=str(asset.get("url") or ""),
            mime_type=str(asset.get("mimeType") or "application/octet-stream"),
            size=int(size) if isinstance(size, int | float) else None,
            duration=props.get("duration"),
            channels=props.get("channels"),
            status=str(asset.get("status", "success")),
            checksum=props.get("sha256") or asset.get("sha256"),
        )


def retry_hint(headers: Mapping[str, str], body: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, from whichever place it put the hint.

    Retry-After as delta-seconds or as an HTTP date, retry-after-ms (milliseconds), or a
    JSON body's `remainingSeconds` (top level or under `details`).
    """
    raw = headers.get("retry-after-ms") or headers.get("Retry-After-Ms")
    if raw:
        try:
            return max(0.0, float(raw) / 1000)
        except ValueError:
            pass
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw:
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if body:
        for place in (body, body.get("details") or {}):
            if isinstance(place, dict) and isinstance(place.get("remainingSeconds"), int | float):
                return max(0.0, float(place["remainingSeconds"]))
    return None


def classify(status: int) -> ErrorKind:
    if status in (401, 403):
        return ErrorKind.CREDENTIALS
    if status in (408, 425, 429) or status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


class ScenarioClient:
    """Async client for the parts of the Scenario API batchgen needs.

    Use as `async with ScenarioClient(...) as client:`; one session per run, with a
    connection pool sized to the run's concurrency.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        max_connections: int = 32,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self.calls: Counter[str] = Counter()  # requests made, by endpoint, for reports and benchmarks

    def __repr__(self) -> str:
        return f"ScenarioClient({self.base_url!r}, {self._credentials!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> ScenarioClient:
        env = os.environ if env is None else env
        base = env.get("SCENARIO_BASE_URL") or DEFAULT_BASE_URL
        return cls(base, Credentials.from_env(env), **kwargs)

    async def __aenter__(self) -> ScenarioClient:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=self._max_connections)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, raise_for_status=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ScenarioClient used outside `async with`")
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        url = f"{self.base_url}{path}"
        self.calls[endpoint] += 1
        headers = {"Authorization": self._credentials.header, "Accept": "application/json"}
        try:
            async with self.session.request(method, url, json=json_body, params=params, headers=headers) as resp:
                text = await resp.text()
                body = _json(text)
                if resp.status >= 400:
                    raise self._error(resp.status, resp.headers, body, text, method, path)
                return resp.status, body
        except ApiError:
            raise
        except aiohttp.ClientConnectorError as err:
            # Never connected: the request cannot have been acted on.
            raise ApiError(0, f"cannot connect: {err.os_error}", ErrorKind.TRANSIENT, method=method, url=path) from None
        except (aiohttp.ClientError, TimeoutError) as err:
            reason = type(err).__name__ if isinstance(err, TimeoutError) else str(err) or type(err).__name__
            raise ApiError(0, reason, ErrorKind.TRANSIENT, method=method, url=path, ambiguous=method != "GET") from None

    def _error(self, status: int, headers: Mapping[str, str], body: Any, text: str, method: str, path: str) -> ApiError:
        body_map = body if isinstance(body, dict) else {}
        reason = body_map.get("reason") or body_map.get("message") or body_map.get("error") or text[:200] or "no reason"
        details = body_map.get("details") if isinstance(body_map.get("details"), dict) else {}
        limit = details.get("actionLimit") if details else None
        kind = classify(status)
        cls = CredentialsError if kind is ErrorKind.CREDENTIALS else ApiError
        return cls(
            status=status,
            reason=self._credentials.redact(str(reason)),
            kind=kind,
            trace_id=body_map.get("trace_id") or headers.get("x-trace-id") or headers.get("x-request-id"),
            retry_after=retry_hint(headers, body_map),
            action_limit=int(limit) if isinstance(limit, int | float) else None,
            method=method,
            url=path,
            ambiguous=method != "GET" and status >= 500,
        )

    async def generate(self, model: str, params: Mapping[str, Any]) -> Submission:
        """Submit one generation. The job is created (and billed) when this returns."""
        _, body = await self._request("POST", f"/generate/custom/{model}", endpoint="generate", json_body=dict(params))
        return Submission(Job.parse(body), body.get("creativeUnitsCost"))

    async def estimate(self, model: str, params: Mapping[str, Any]) -> float:
        """The creative-unit cost of a generation, without running it.

        `dryRun` goes in the query string: in the body it is ignored and a paid job runs.
        """
        status, body = await self._request(
            "POST", f"/generate/custom/{model}", endpoint="dry-run", json_body=dict(params), params={"dryRun": "true"}
        )
        cost = body.get("creativeUnitsCost") if isinstance(body, dict) else None
        if status != 269 and "job" in (body or {}):
            raise ApiError(status, "dry run created a job instead of pricing it", ErrorKind.PERMANENT)
        if not isinstance(cost, int | float):
            raise ApiError(status, "dry run answered without creativeUnitsCost", ErrorKind.TRANSIENT)
        return float(cost)

    async def get_job(self, job_id: str) -> Job:
        _, body = await self._request("GET", f"/jobs/{job_id}", endpoint="job")
        return Job.parse(body)

    async def list_jobs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        created_after: str | None = None,
        page_size: int = 100,
        pagination_token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """One page of the account's jobs, newest first, and the next page's token."""
        params = {"pageSize": str(max(1, min(100, page_size)))}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if created_after:
            params["createdAfter"] = created_after
        if pagination_token:
            params["paginationToken"] = pagination_token
        _, body = await self._request("GET", "/jobs", endpoint="jobs", params=params)
        return [Job.parse(j) for j in body.get("jobs", [])], body.get("nextPaginationToken") or None

    async def iter_jobs(
        self, *, retry: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None, **filters: Any
    ) -> AsyncIterator[Job]:
        """Every job matching `filters`, page after page; `retry` wraps each page's request."""
        token = None
        while True:

            async def page(token: str | None = token) -> tuple[list[Job], str | None]:
                return await self.list_jobs(pagination_token=token, **filters)

            jobs, token = await (retry(page) if retry else page())
            for job in jobs:
                yield job
            if not token:
                return

    async def cancel_job(self, job_id: str) -> None:
        await self._request("POST", f"/jobs/{job_id}/action", endpoint="cancel", json_body={"action": "cancel"})

    async def get_asset(self, asset_id: str) -> Asset:
        _, body = await self._request("GET", f"/assets/{asset_id}", endpoint="asset")
        return Asset.parse(body)

    async def get_assets(self, asset_ids: Sequence[str]) -> list[Asset]:
        """Several assets in as few calls as the bulk endpoint allows (200 per call)."""
        out: list[Asset] = []
        for start in range(0, len(asset_ids), BULK_LIMIT):
            chunk = list(asset_ids[start : start + BULK_LIMIT])
            _, body = await self._request(
                "POST", "/assets/get-bulk", endpoint="assets-bulk", json_body={"assetIds": chunk}
            )
            out.extend(Asset.parse(a) for a in body.get("assets", []))
        return out

    async def upload_audio(
        self, path: str | os.PathLike[str], *, poll_interval: float = 0.5, max_wait: float = 300
    ) -> str:
        """Upload a local audio file; returns the asset id once the API has processed it."""
        local = Path(path)
        data = await asyncio.to_thread(local.read_bytes)
        content_type = mimetypes.guess_type(local.name)[0] or "audio/wav"
        _, body = await self._request(
            "POST",
            "/uploads",
            endpoint="upload",
            json_body={
                "fileName": local.name,
                "fileSize": len(data),
                "contentType": content_type,
                "kind": "audio",
                "parts": 1,
            },
        )
        upload = body["upload"]
        part_url = upload["parts"][0]["url"]
        self.calls["upload-part"] += 1
        try:
            async with self.session.put(part_url, data=data, headers={"Content-Type": content_type}) as resp:
                if resp.status >= 400:
                    raise ApiError(resp.status, f"upload of {local.name} refused", classify(resp.status), method="PUT")
        except aiohttp.ClientError as err:
            raise ApiError(0, f"upload of {local.name} failed: {err}", ErrorKind.TRANSIENT, method="PUT") from None
        _, body = await self._request(
            "POST", f"/uploads/{upload['id']}/action", endpoint="upload", json_body={"action": "complete"}
        )
        done = body.get("upload", body)
        job_id = done.get("jobId") or (done.get("job") or {}).get("jobId")
        if not job_id:
            asset_id = done.get("assetId") or (done.get("asset") or {}).get("id")
            if asset_id:
                return str(asset_id)
            raise ApiError(200, "upload completed without a job or asset id", ErrorKind.PERMANENT)
        deadline = time.monotonic() + max_wait
        while True:
            job = await self.get_job(job_id)
            if job.status == "success":
                asset_id = job.output_entity or (job.asset_ids[0] if job.asset_ids else None)
                if not asset_id:
                    raise ApiError(200, f"upload of {local.name} finished without an asset id", ErrorKind.PERMANENT)
                return asset_id
            if job.terminal:
                raise ApiError(200, f"upload of {local.name} {job.status}: {job.error}", ErrorKind.PERMANENT)
            if time.monotonic() > deadline:
                raise ApiError(0, f"upload of {local.name} not processed after {max_wait:.0f}s", ErrorKind.TRANSIENT)
            await asyncio.sleep(poll_interval)

    @asynccontextmanager
    async def download(
        self, url: str, *, offset: int = 0, if_range: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a CDN URL for streaming, from byte `offset`; no Authorization header.

        403/404/410 mean the signed URL expired (or was revoked): `DownloadError(expired=True)`.
        """
        if not url.startswith(("http://", "https://")):
            raise DownloadError(f"asset URL is not http(s): {url[:60]!r}", retryable=False)
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if if_range:
                headers["If-Range"] = if_range
        self.calls["download"] += 1
        try:
            async with self.session.get(url, headers=headers, auto_decompress=False) as resp:
                if resp.status in (403, 404, 410):
                    raise DownloadError(f"download URL refused with HTTP {resp.status} (expired?)", expired=True)
                if resp.status >= 400:
                    raise DownloadError(f"download failed with HTTP {resp.status}")
                yield resp
        except aiohttp.ClientConnectorError as err:
            raise DownloadError(f"cannot connect to download host: {err.os_error}") from None


def _json(text: str) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


def iso(ts: float) -> str:
    """A wall-clock time as the API writes it (ISO 8601, UTC, milliseconds)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""The Scenario API over one aiohttp session: requests out, typed results or errors back.

Every API call carries HTTP Basic auth (and `projectId` when the batch has one); CDN
downloads never carry auth (signed URLs carry their own authority, and storage services
reject a second auth mechanism). Every answer is parsed defensively into typed values:
an answer that does not hold up is a `MalformedAnswer`, which fails or retries that one
request, never the run. Bodies are read up to a cap (a gzip bomb cannot exhaust
memory), ids are checked before they go into a URL path, and the credentials are
scrubbed from every string a server sends back.
"""

from __future__ import annotations

import errno
import math
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

import aiofiles
import aiohttp
from aiofiles.threadpool.binary import AsyncBufferedReader

from ..core import text
from ..core.errors import ApiError, CredentialsError, DownloadError, ErrorKind, MalformedAnswer, UsageError
from ..core.schema import ModelSchema
from ..core.schema import parse as parse_schema
from ..core.task import is_safe_id
from . import fields
from .auth import Credentials
from .models import Asset, Job, Submission, Upload

DEFAULT_BASE_URL = "https://api.cloud.scenario.com/v1"
BULK_LIMIT = 200  # POST /assets/get-bulk takes at most 200 ids
MAX_BODY = 16 * 1024 * 1024  # bytes of one API answer, after decompression
UPLOAD_CHUNK = 1024 * 1024  # bytes of an upload read from disk at a time
MAX_PAGES = 2000  # job-list pages one walk reads at most (200,000 jobs)
MAX_EMPTY = 50  # empty pages in a row before a walk gives up


def retry_hint(headers: Mapping[str, str], body: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, from whichever place it put the hint.

    Retry-After as delta-seconds or as an HTTP date, retry-after-ms (milliseconds), or a
    JSON body's `remainingSeconds` (top level or under `details`). Nonsense (negative,
    not finite) is ignored; callers cap what is left.
    """
    raw = headers.get("retry-after-ms") or headers.get("Retry-After-Ms")
    if raw and (ms := _float(raw)) is not None:
        return ms / 1000
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw:
        raw = raw.strip()
        if (seconds := _float(raw)) is not None:
            return seconds
        import email.utils  # only for the HTTP-date form: the email package is slow to import

        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if body:
        for place in (body, fields.mapping(body.get("details"))):
            if (seconds := fields.number(place.get("remainingSeconds"))) is not None and seconds >= 0:
                return seconds
    return None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


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
        project: str | None = None,
        max_connections: int = 32,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._auth = credentials.header  # base64 once, not on every request
        self.project = project
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._counted: aiohttp.ClientSession | None = None
        self.calls: Counter[str] = Counter()  # requests made, by endpoint, for reports and benchmarks

    def __repr__(self) -> str:
        return f"ScenarioClient({self.base_url!r}, {self._credentials!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> ScenarioClient:
        env = os.environ if env is None else env
        base = env.get("SCENARIO_BASE_URL") or DEFAULT_BASE_URL
        if problem := _base_url_problem(base):
            shown = re.sub(r"//[^/@]*@", "//***@", base)  # a password in the URL is never printed
            raise UsageError(f"SCENARIO_BASE_URL {problem}, not {shown[:80]!r}")
        kwargs.setdefault("project", env.get("SCENARIO_PROJECT_ID") or None)
        return cls(base, Credentials.from_env(env), **kwargs)

    @property
    def redact(self) -> Callable[[str], str]:
        return self._credentials.redact

    async def __aenter__(self) -> ScenarioClient:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=self._max_connections)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, raise_for_status=False)
        # Rate-counted requests (submits, dry runs) go through a second session on the same
        # pool whose trace hook says when each one's bytes go to the socket: the moment the
        # rate window counts from. Not `on_request_headers_sent`: aiohttp calls it before it
        # even buffers the headers, which leave with the body from a task that runs turns of
        # a busy loop later (up to 10 ms measured), so a window counted from it ends early.
        # The first body chunk's hook runs just before that write, in the same step. Only this
        # session pays for tracing (about 30 µs a request).
        departures = aiohttp.TraceConfig()
        departures.on_request_chunk_sent.append(_departed)
        self._counted = aiohttp.ClientSession(
            connector=connector,
            connector_owner=False,
            timeout=self._timeout,
            raise_for_status=False,
            trace_configs=[departures],
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._counted is not None:
            await self._counted.close()
            self._counted = None
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
        departed: Callable[[], None] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One API call; the answer's status and JSON object, or an `ApiError`.

        `departed`, for a rate-counted request, is called as its bytes go to the socket."""
        url = f"{self.base_url}{path}"
        query = dict(params or {})
        if self.project:
            query["projectId"] = self.project
        self.calls[endpoint] += 1
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        sent = method != "GET"  # a request that may have been acted on if the answer is lost
        try:
            session = self.session if departed is None else self._counted or self.session
            async with session.request(
                method,
                url,
                json=json_body,
                params=query or None,
                headers=headers,
                allow_redirects=False,
                trace_request_ctx=departed,
            ) as resp:
                raw = await _read_capped(resp, MAX_BODY)
                body = _json(raw)
                if resp.status >= 300:
                    raise self._error(resp.status, resp.headers, body, raw, method, path)
                if not isinstance(body, dict):
                    raise MalformedAnswer("answer is not a JSON object", status=resp.status, ambiguous=sent)
                return resp.status, body
        except ApiError as err:
            if isinstance(err, MalformedAnswer):
                err.method, err.url = method, path
            raise
        except aiohttp.ClientConnectorError as err:
            # Never connected: the request cannot have been acted on.
            reason = f"cannot connect: {err.os_error}"
            raise ApiError(0, reason, ErrorKind.TRANSIENT, method=method, url=path) from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            reason = type(err).__name__ if isinstance(err, TimeoutError) else str(err)[:200] or type(err).__name__
            raise ApiError(
                0, self.redact(reason), ErrorKind.TRANSIENT, method=method, url=path, ambiguous=sent
            ) from None

    def _error(
        self, status: int, headers: Mapping[str, str], body: Any, raw: bytes, method: str, path: str
    ) -> ApiError:
        body_map = fields.mapping(body)
        reason = (
            fields.text(body_map.get("reason"))
            or fields.text(body_map.get("message"))
            or fields.text(body_map.get("error"))
            or raw[:200].decode("utf-8", "replace")
            or "no reason"
        )
        limit = fields.number(fields.mapping(body_map.get("details")).get("actionLimit"))
        if 300 <= status < 400:
            reason, kind = f"unexpected redirect ({reason})", ErrorKind.PERMANENT
        else:
            kind = classify(status)
        cls = CredentialsError if kind is ErrorKind.CREDENTIALS else ApiError
        trace = fields.text(body_map.get("trace_id"), 80) or headers.get("x-trace-id") or headers.get("x-request-id")
        trace = self.redact(trace) if trace else None
        return cls(
            status=status,
            reason=self.redact(" ".join(reason.split())),
            kind=kind,
            trace_id=trace[:80] if trace else None,
            retry_after=retry_hint(headers, body_map),
            action_limit=int(limit) if limit is not None and limit >= 1 else None,
            method=method,
            url=path,
            ambiguous=method != "GET" and status >= 500,
        )

    async def generate(
        self, model: str, params: Mapping[str, Any], *, departed: Callable[[], None] | None = None
    ) -> Submission:
        """Submit one generation. The job is created (and billed) when this returns."""
        _, body = await self._request(
            "POST",
            f"/generate/custom/{_path_id(model)}",
            endpoint="generate",
            json_body=dict(params),
            departed=departed,
        )
        try:
            job = Job.parse(body, self.redact)
        except MalformedAnswer as err:
            # A 2xx without a usable job may still mean a job exists (and is billed).
            raise MalformedAnswer(err.reason, status=200, ambiguous=True, method="POST", url="/generate") from None
        return Submission(
            job,
            fields.credits(body.get("creativeUnitsCost")),
            fields.credits(body.get("creativeUnitsDiscount")),
            fields.numbers(body.get("costDetails")),
        )

    async def estimate(
        self, model: str, params: Mapping[str, Any], *, departed: Callable[[], None] | None = None
    ) -> float:
        """The creative-unit cost of a generation, without running it.

        `dryRun` goes in the query string: in the body it is ignored and a paid job runs.
        """
        status, body = await self._request(
            "POST",
            f"/generate/custom/{_path_id(model)}",
            endpoint="dry-run",
            json_body=dict(params),
            params={"dryRun": "true"},
            departed=departed,
        )
        cost = fields.number(body.get("creativeUnitsCost"))
        if status != 269 and "job" in body:
            raise ApiError(status, "dry run created a job instead of pricing it", ErrorKind.PERMANENT)
        if cost is None or cost < 0:
            raise MalformedAnswer("dry run answered without a usable creativeUnitsCost", status=status)
        return cost

    async def get_job(self, job_id: str) -> Job:
        _, body = await self._request("GET", f"/jobs/{_path_id(job_id)}", endpoint="job")
        return Job.parse(body, self.redact)

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        created_after: str | None = None,
        page_size: int = 100,
        pagination_token: str | None = None,
        keep: Callable[[str], bool] | None = None,
        brief: bool = False,
    ) -> tuple[list[Job], str | None]:
        """One page of the account's jobs, newest first, and the next page's token.

        As the SDK documents: `status` is one value and cannot be combined with
        `createdAfter`; a page may be short, even empty, while a token is still given.
        A job in the page that does not parse is left out, not fatal; with `keep`, only
        jobs whose id it accepts are parsed at all (a listing of 100 for the 3 wanted).
        """
        if status and created_after:
            raise ValueError("the API does not combine status with createdAfter")
        params = {"pageSize": str(max(1, min(100, page_size)))}
        if status:
            params["status"] = status
        if created_after:
            params["createdAfter"] = created_after
        if pagination_token:
            params["paginationToken"] = pagination_token
        _, body = await self._request("GET", "/jobs", endpoint="jobs", params=params)
        jobs = []
        for item in fields.items(body.get("jobs")):
            if keep is not None and not (isinstance(item, dict) and keep(str(item.get("jobId") or item.get("id")))):
                continue
            try:
                jobs.append(Job.parse(item, self.redact, brief=brief))
            except MalformedAnswer:
                continue
        token = fields.text(body.get("nextPaginationToken"), 4096)
        return jobs, token or None

    async def iter_jobs(
        self, *, retry: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None, **filters: Any
    ) -> AsyncIterator[Job]:
        """Every job matching `filters`, page after page; `retry` wraps each page's request.

        Pages may be short or empty while a token is still given (the SDK says so); the
        walk stops at a token seen before, after `MAX_PAGES`, or after `MAX_EMPTY` empty
        pages in a row, so a server that pages for ever cannot hold a run.
        """
        token = None
        seen: set[str] = set()
        empty = 0
        for _ in range(MAX_PAGES):

            async def page(token: str | None = token) -> tuple[list[Job], str | None]:
                return await self.list_jobs(pagination_token=token, **filters)

            jobs, token = await (retry(page) if retry else page())
            for job in jobs:
                yield job
            empty = 0 if jobs else empty + 1
            if not token or token in seen or empty >= MAX_EMPTY:
                return
            seen.add(token)

    async def cancel_job(self, job_id: str) -> None:
        await self._request(
            "POST", f"/jobs/{_path_id(job_id)}/action", endpoint="cancel", json_body={"action": "cancel"}
        )

    async def get_asset(self, asset_id: str) -> Asset:
        _, body = await self._request("GET", f"/assets/{_path_id(asset_id)}", endpoint="asset")
        return Asset.parse(body)

    async def get_assets(self, asset_ids: Sequence[str]) -> list[Asset]:
        """Several assets in as few calls as the bulk endpoint allows (200 per call)."""
        out: list[Asset] = []
        for start in range(0, len(asset_ids), BULK_LIMIT):
            chunk = [_path_id(a) for a in asset_ids[start : start + BULK_LIMIT]]
            _, body = await self._request(
                "POST", "/assets/get-bulk", endpoint="assets-bulk", json_body={"assetIds": chunk}
            )
            for item in fields.items(body.get("assets")):
                try:
                    out.append(Asset.parse(item))
                except MalformedAnswer:
                    continue
        return out

    async def create_upload(self, file_name: str, size: int, content_type: str) -> Upload:
        """Start a one-part upload of an audio file; the answer carries the part's URL."""
        body = {"fileName": file_name, "fileSize": size, "contentType": content_type, "kind": "audio", "parts": 1}
        _, answer = await self._request("POST", "/uploads", endpoint="upload", json_body=body)
        upload = Upload.parse(answer, self.redact)
        if not upload.part_urls:
            raise MalformedAnswer("upload answer has no part URL")
        return upload

    async def put_part(self, url: str, path: str | os.PathLike[str], size: int, content_type: str) -> None:
        """PUT a file to a signed part URL, streamed from disk (no auth: the URL carries it)."""
        self.calls["upload-part"] += 1
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        try:
            async with aiofiles.open(path, "rb") as fh:  # read in a thread: a slow disk never stalls the loop
                body = _chunks(fh, size)
                async with self.session.put(url, data=body, headers=headers, allow_redirects=False) as resp:
                    if resp.status >= 300:
                        kind = ErrorKind.PERMANENT if 300 <= resp.status < 400 else classify(resp.status)
                        raise ApiError(resp.status, "upload part refused", kind, method="PUT")
        except OSError as err:
            raise ApiError(0, f"cannot read {os.fspath(path)}: {err.strerror}", ErrorKind.PERMANENT) from None
        except aiohttp.ClientError as err:
            raise ApiError(0, f"upload part failed: {type(err).__name__}", ErrorKind.TRANSIENT, method="PUT") from None

    async def complete_upload(self, upload_id: str) -> Upload:
        _, body = await self._request(
            "POST", f"/uploads/{_path_id(upload_id)}/action", endpoint="upload", json_body={"action": "complete"}
        )
        return Upload.parse(body, self.redact)

    async def get_upload(self, upload_id: str) -> Upload:
        _, body = await self._request("GET", f"/uploads/{_path_id(upload_id)}", endpoint="upload-status")
        return Upload.parse(body, self.redact)

    async def get_model(self, model_id: str) -> ModelSchema:
        """The model's inputs as `GET /models/{id}` describes them (`SchemaError` if unusable)."""
        path = f"/models/{_path_id(model_id)}"
        _, body = await self._request("GET", path, endpoint="model")
        return parse_schema(body, f"GET {path}")

    @asynccontextmanager
    async def download(
        self, url: str, *, offset: int = 0, if_range: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a CDN URL for streaming, from byte `offset`; no Authorization header.

        403/404/410 mean the signed URL expired (or was revoked): `DownloadError(expired=True)`.
        Redirects are followed only to http(s), at most a few.
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
            async with self.session.get(url, headers=headers, auto_decompress=False, max_redirects=5) as resp:
                if resp.status in (403, 404, 410):
                    raise DownloadError(f"download URL refused with HTTP {resp.status} (expired?)", expired=True)
                if resp.status >= 300:
                    raise DownloadError(f"download failed with HTTP {resp.status}")
                yield resp
        except aiohttp.ClientConnectorError as err:
            raise DownloadError(f"cannot connect to download host: {err.os_error}") from None
        except (aiohttp.TooManyRedirects, aiohttp.InvalidURL, aiohttp.RedirectClientError) as err:
            raise DownloadError(f"download redirected badly: {type(err).__name__}", retryable=False) from None
        except aiohttp.ClientResponseError as err:
            raise DownloadError(f"download failed: {err.status} {err.message[:80]}") from None


async def _departed(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
    """The trace hook of the rate-counted session: tell the request's slot it has left (the
    first chunk of its body is being written, headers with it; later chunks change nothing)."""
    if callable(departed := context.trace_request_ctx):
        departed()


def _base_url_problem(base: str) -> str | None:
    """Why `base` cannot be the API's address (a URL that fails on every request would
    otherwise be retried as a network fault until the deadlines), or None."""
    if not base.startswith(("http://", "https://")):
        return "must be an http(s) URL"
    try:
        parts = urlsplit(base)
        port = parts.port  # ValueError when it is not a number from 0 to 65535
    except ValueError:
        return "is not a valid URL"
    if not parts.hostname or any(c.isspace() for c in base) or text.clean(base) != base:
        return "is not a valid URL"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user or password (credentials go in SCENARIO_API_KEY/SECRET)"
    if port == 0:
        return "has port 0"
    return None


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The (decompressed) body, refusing more than `limit` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ApiError(resp.status, f"answer of {resp.content_length} bytes is too large", ErrorKind.TRANSIENT)
    if resp.content_length is not None and "Content-Encoding" not in resp.headers:
        return await resp.read()  # the length is known and small: no decompression can inflate it
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(resp.status, f"answer larger than {limit} bytes", ErrorKind.TRANSIENT)
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return text.loads(raw)
    except (ValueError, RecursionError):
        return None


async def _chunks(fh: AsyncBufferedReader, size: int) -> AsyncIterator[bytes]:
    """A file's first `size` bytes, as the Content-Length promised them, a chunk at a time."""
    left = size
    while left > 0:
        chunk = await fh.read(min(UPLOAD_CHUNK, left))
        if not chunk:
            raise OSError(errno.EIO, "the file got shorter while it was being sent")
        left -= len(chunk)
        yield chunk


def _path_id(value: str) -> str:
    """An id checked for URL-path safety and quoted; a bad one never leaves the process."""
    if not is_safe_id(value):
        raise ApiError(0, f"refusing an unsafe id {str(value)[:40]!r}", ErrorKind.PERMANENT)
    return quote(value, safe="")

"""Input audio to an asset id, the way the official SDK describes uploads.

Create the upload, PUT the file to its part URL (streamed from disk, no auth), mark it
`complete`, then poll `GET /uploads/{id}` until it is `imported` (the asset id is its
`entityId`) or `failed` (`errorMessage`). An upload that shows a `jobId` is followed
through that job too, whichever answers first.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..core.errors import ApiError, ErrorKind
from ..core.retry import Backoff, retry_call
from .client import ScenarioClient
from .models import JobStatus, Upload

IMPORTED, FAILED = "imported", "failed"
CONTENT_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg"}


async def upload_audio(
    client: ScenarioClient,
    path: str | os.PathLike[str],
    *,
    policy: Backoff,
    first_poll: float = 0.2,
    max_wait: float = 300.0,
    observe: Callable[[BaseException], None] | None = None,
) -> str:
    """Upload a local audio file and return its asset id once the API has imported it."""
    local = Path(path)
    size = (await asyncio.to_thread(os.stat, local)).st_size
    content_type = CONTENT_TYPES.get(local.suffix.lower()) or mimetypes.guess_type(local.name)[0] or "audio/wav"
    created = await retry_call(policy, lambda: client.create_upload(local.name, size, content_type), observe=observe)
    await retry_call(policy, lambda: client.put_part(created.part_urls[0], local, size, content_type), observe=observe)
    upload = await retry_call(policy, lambda: client.complete_upload(created.id), observe=observe)
    deadline = time.monotonic() + max_wait
    delay = first_poll
    while True:
        if (asset := await _settled(client, upload, local.name, policy, observe)) is not None:
            return asset
        if time.monotonic() + delay > deadline:
            raise ApiError(0, f"upload of {local.name} not imported after {max_wait:.0f}s", ErrorKind.TRANSIENT)
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 5.0)
        upload = await retry_call(policy, lambda: client.get_upload(created.id), observe=observe)


async def _settled(
    client: ScenarioClient,
    upload: Upload,
    name: str,
    policy: Backoff,
    observe: Callable[[BaseException], None] | None,
) -> str | None:
    """The asset id if the upload is imported; raises if it failed; None while it is under way."""
    if upload.status == IMPORTED and upload.entity_id:
        return upload.entity_id
    if upload.status == FAILED:
        raise ApiError(200, f"upload of {name} failed: {upload.error or 'no reason given'}", ErrorKind.PERMANENT)
    if upload.job_id is None:
        return None
    job = await retry_call(policy, lambda: client.get_job(upload.job_id or ""), observe=observe)
    if job.status == JobStatus.SUCCESS:
        return job.output_entity or (job.asset_ids[0] if job.asset_ids else None)
    if job.terminal:
        raise ApiError(200, f"upload of {name} {job.status}: {job.error or 'no reason given'}", ErrorKind.PERMANENT)
    return None

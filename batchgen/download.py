"""Stream an asset to `<file>.part`, verify it, rename it into place.

A file under its final name is always complete and checked: length against the
response and the asset's declared size, sha256 when the API gives one, and an audio
header that parses. A cut connection resumes with Range; an expired URL is refreshed
through the asset endpoint; a server that sends too much is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiohttp

from .client import Asset, ScenarioClient
from .errors import DiskError, DownloadError
from .retry import Backoff

CHUNK = 256 * 1024
MAX_REFRESHES = 5  # fresh URLs that are expired again mean a clock or CDN problem: give up
EXTENSIONS = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/aac": ".aac",
    "audio/mp4": ".m4a",
}


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A finished, verified file."""

    path: str  # relative to the batch folder
    bytes: int
    sha256: str
    mime_type: str
    asset_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "mime": self.mime_type,
            "assetId": self.asset_id,
        }


def extension(mime_type: str) -> str:
    """File extension for an asset's MIME type; anything not audio is refused."""
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime in EXTENSIONS:
        return EXTENSIONS[mime]
    if mime.startswith("audio/"):
        sub = mime.split("/", 1)[1].removeprefix("x-")
        return "." + "".join(c for c in sub if c.isalnum())[:8] if sub else ".audio"
    raise DownloadError(f"asset is {mime_type!r}, not audio", retryable=False)


def check_audio(path: Path, ext: str) -> None:
    """Raise unless the file's header parses as the audio format its extension says."""
    with path.open("rb") as fh:
        head = fh.read(12)
    if ext == ".wav":
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise DownloadError("downloaded file is not a WAV (no RIFF/WAVE header)")
        try:
            with wave.open(str(path), "rb") as w:
                frames, width, channels = w.getnframes(), w.getsampwidth(), w.getnchannels()
        except (wave.Error, EOFError) as err:
            raise DownloadError(f"downloaded WAV does not parse: {err}") from None
        expected = frames * width * channels
        if path.stat().st_size < 44 + expected - width * channels:
            raise DownloadError("downloaded WAV is shorter than its header says")
    elif ext == ".mp3" and not (head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)):
        raise DownloadError("downloaded file is not an MP3 (no ID3 tag or frame sync)")


async def download_asset(
    client: ScenarioClient,
    asset: Asset,
    dest: Path,
    *,
    refresh: Callable[[], Awaitable[Asset]],
    max_bytes: int,
    backoff: Backoff,
    folder: Path,
) -> FileInfo:
    """Download `asset` to `dest` (its extension decided here), atomically and verified."""
    ext = extension(asset.mime_type)
    final = dest.with_name(dest.name + ext)
    part = final.with_name(final.name + ".part")
    limit = min(max_bytes, asset.size) if asset.size else max_bytes
    attempt = refreshes = 0
    sha = hashlib.sha256()
    written = 0
    etag: str | None = None
    try:
        handle = await aiofiles.open(part, "wb")
    except OSError as err:
        raise DiskError(str(part), err) from None

    async def start_over() -> None:
        nonlocal sha, written
        await handle.seek(0)
        await handle.truncate()
        sha, written = hashlib.sha256(), 0

    try:
        while True:
            try:
                async with client.download(asset.url, offset=written, if_range=etag) as resp:
                    if written and resp.status != 206:
                        await start_over()  # the server ignored Range (or the file changed)
                    served_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    if (
                        served_type
                        and not served_type.startswith("audio/")
                        and served_type != "application/octet-stream"
                    ):
                        raise DownloadError(f"download is {served_type!r}, not audio", retryable=False)
                    etag = resp.headers.get("ETag") or etag
                    total = written + (resp.content_length or 0) if resp.content_length is not None else None
                    if total is not None and total > limit:
                        raise DownloadError(
                            f"server announced {total} bytes, more than the {limit} allowed; cut off", restart=True
                        )
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise DownloadError(f"download ran past {limit} bytes; cut off", restart=True)
                        sha.update(chunk)
                        try:
                            await handle.write(chunk)
                        except OSError as err:
                            raise DiskError(str(part), err) from None
                    if total is not None and written != total:
                        raise DownloadError(f"download ended at {written} of {total} bytes")
                break
            except DownloadError as err:
                if err.expired and refreshes < MAX_REFRESHES:
                    refreshes += 1
                    asset = await refresh()  # a fresh signed URL; bytes so far stay valid
                    continue
                attempt += 1
                if not err.retryable or backoff.exhausted(attempt):
                    raise
                if err.restart:
                    await start_over()
                await asyncio.sleep(backoff.delay(attempt))
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as err:
                attempt += 1  # cut mid-body: resume from what we have, with Range
                if backoff.exhausted(attempt):
                    raise DownloadError(f"download kept failing: {type(err).__name__}") from None
                await asyncio.sleep(backoff.delay(attempt))
        try:
            await handle.flush()
            await asyncio.to_thread(os.fsync, handle.fileno())
        except OSError as err:
            raise DiskError(str(part), err) from None
    except BaseException:
        await handle.close()
        _unlink(part)  # a failed download leaves nothing behind, not even a .part
        raise
    else:
        await handle.close()
    try:
        if asset.size is not None and written != asset.size:
            raise DownloadError(f"downloaded {written} bytes, asset says {asset.size}")
        digest = sha.hexdigest()
        if asset.checksum and asset.checksum.lower() != digest:
            raise DownloadError("sha256 does not match the asset's checksum")
        await asyncio.to_thread(check_audio, part, ext)
        os.replace(part, final)
    except BaseException:
        _unlink(part)
        raise
    return FileInfo(str(final.relative_to(folder)), written, digest, asset.mime_type, asset.id)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so readers see the old file or the new one, never half of one."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, path)
    except OSError as err:
        _unlink(part)
        raise DiskError(str(path), err) from None


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()

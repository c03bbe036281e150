"""Stream an asset to `<file>.part`, verify it, rename it into place.

A file under its final name is always complete and checked: length against the
response and the asset's declared size, sha256 when the API gives one, and magic bytes
that match the audio type its extension claims (a WAV's header must parse). A cut
connection resumes with Range; an expired URL is refreshed through the asset endpoint;
a server that sends too much is cut off, one that stalls is given up on, and every
download has a deadline. Only audio types on an allowlist are accepted, and their
extensions can never collide with a sidecar (`.json`) or the page (`.html`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiofiles
import aiohttp
from aiofiles.threadpool.binary import AsyncFileIO

from ..audio.wavfile import WavError, parse, read_info
from ..core.errors import DiskError, DownloadError
from ..core.retry import Backoff, Retrying
from ..scenario.client import ScenarioClient
from ..scenario.models import Asset
from ..store import files

CHUNK = 256 * 1024
HEAD = 64 * 1024  # bytes kept from the start of a download to check its header
T = TypeVar("T")
# The thread that writes downloads (aiofiles runs each call there): one, kept warm, is
# cheaper per write than the loop's shared pool (0.23 against 0.55 ms of CPU per small
# file, bench/README.md), and a disk takes one write at a time anyway.
_DISK = concurrent.futures.ThreadPoolExecutor(1, "batchgen-disk")
MAX_REFRESHES = 6  # fresh URLs in a row before an expired one counts as a failure
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
    "audio/vorbis": ".ogg",
    "audio/opus": ".opus",
    "audio/aac": ".aac",
    "audio/x-aac": ".aac",
    "audio/mp4": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/webm": ".webm",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one download: size, how long in all, and how slow before it counts as stalled."""

    max_bytes: int = 2 * 1024**3
    deadline: float = 1800.0  # seconds for one file, retries included
    stall_bytes: int = 16 * 1024  # a stall window receiving less than this is a stall

    @property
    def stall_seconds(self) -> float:
        return min(30.0, self.deadline / 4)


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
    """File extension for an asset's MIME type, from the allowlist; anything else is refused."""
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime in EXTENSIONS:
        return EXTENSIONS[mime]
    raise DownloadError(f"asset type {mime_type[:60]!r} is not an audio type batchgen accepts", retryable=False)


def _looks_like(ext: str, head: bytes) -> bool:
    if ext == ".wav":
        return head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    if ext == ".mp3":
        return head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    if ext == ".flac":
        return head[:4] == b"fLaC"
    if ext in (".ogg", ".opus"):
        return head[:4] == b"OggS"
    if ext == ".aac":
        return len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0
    if ext == ".m4a":
        return head[4:8] == b"ftyp"
    if ext == ".webm":
        return head[:4] == b"\x1a\x45\xdf\xa3"
    return False


def check_audio(path: str, ext: str, head: bytes, size: int) -> None:
    """Raise unless the file's first bytes are the audio format its extension says (a WAV must parse).

    `head` (the file's first bytes, kept while downloading) and `size` spare reading the
    file again when the header lies within them.
    """
    if not _looks_like(ext, head):
        raise DownloadError(f"downloaded file is not {ext[1:].upper()} audio (its first bytes say otherwise)")
    if ext == ".wav":
        try:
            try:
                info = parse(io.BytesIO(head), size)
            except WavError:
                if len(head) >= size:
                    raise
                info = read_info(Path(path))  # the data chunk starts past the head: read the file itself
        except (WavError, OSError) as err:
            raise DownloadError(f"downloaded WAV does not parse: {err}") from None
        if info.frames == 0:
            raise DownloadError("downloaded WAV holds no audio")


class _Sink:
    """Where a download's bytes go: the .part file (through aiofiles), their count, hash and head.

    Bytes are gathered into writes of `FLUSH` bytes and each write runs in a thread
    (aiofiles), so a slow or network disk never stalls the event loop, while a typical
    asset costs a handful of thread hops rather than one per chunk (and a download holds
    at most about `FLUSH` bytes of memory). A write is never
    abandoned mid-way: cancelled, the caller waits for the thread to finish it before the
    descriptor can be closed, so no late write can land in a file opened after it.
    """

    FLUSH = 1024 * 1024

    def __init__(self, path: str, out: AsyncFileIO) -> None:
        self.path = path
        self._out = out
        self._pending = bytearray()
        self.head = b""
        self.written = 0  # bytes received (the ones pending included): where a resumed download starts
        self.sha = hashlib.sha256()
        self.etag: str | None = None

    async def add(self, chunk: bytes) -> None:
        self.written += len(chunk)
        self.sha.update(chunk)
        if len(self.head) < HEAD:
            self.head += chunk[: HEAD - len(self.head)]
        self._pending += chunk
        if len(self._pending) >= self.FLUSH:
            await self.flush()

    async def flush(self) -> None:
        data, self._pending = self._pending, bytearray()  # handed to the thread whole, never resized under it
        while data:  # an unbuffered write may take part of it
            taken = await self._io(self._out.write(data))
            if not taken:
                raise DiskError(self.path, OSError(errno.EIO, "the disk took no bytes"))
            data = data[taken:]

    async def reset(self) -> None:
        """Start the file over (the server ignored Range, or sent too much)."""
        self._pending.clear()
        await self._io(self._out.truncate(0))
        await self._io(self._out.seek(0))
        self.written, self.sha, self.head = 0, hashlib.sha256(), b""

    async def _io(self, call: Awaitable[T]) -> T:
        job = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            while not job.done():  # the thread still writes: let it finish before the file can close
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(job)
            raise
        except OSError as err:
            raise DiskError(self.path, err) from None


async def download_asset(
    client: ScenarioClient,
    asset: Asset,
    dest: Path,
    *,
    refresh: Callable[[], Awaitable[Asset]],
    limits: Limits,
    policy: Backoff,
    folder: Path,
) -> FileInfo:
    """Download `asset` to `dest` plus its extension, atomically and verified."""
    ext = extension(asset.mime_type)
    final = os.fspath(dest) + ext  # strings, not Paths: this runs for every file of a batch
    part = final + ".part"
    fd = files.create_fd(part)  # never through a symlink; aiofiles writes to it, the descriptor stays ours
    try:
        try:
            # Unbuffered, on our descriptor: nothing is left to flush, so the file object
            # needs no closing of its own (the descriptor is closed below).
            progress = _Sink(part, await aiofiles.open(fd, "wb", buffering=0, closefd=False, executor=_DISK))
            try:
                async with asyncio.timeout(limits.deadline):
                    asset = await _fetch(client, asset, progress, refresh, limits, policy)
                    await progress.flush()
            except TimeoutError:
                raise DownloadError(f"download took longer than {limits.deadline:.0f}s; given up") from None
        except OSError as err:
            raise DiskError(part, err) from None
        finally:
            files.close(fd, part)
        _verify(asset, part, ext, progress)
        files.replace(part, final)
    except BaseException:
        files.unlink_quietly(part)  # a failed download leaves nothing behind, not even a .part
        raise
    return FileInfo(_relative(final, folder), progress.written, progress.sha.hexdigest(), asset.mime_type, asset.id)


def _relative(path: str, folder: Path) -> str:
    prefix = os.path.join(folder, "")
    return path[len(prefix) :] if path.startswith(prefix) else str(Path(path).relative_to(folder))


def _verify(asset: Asset, part: str, ext: str, progress: _Sink) -> None:
    if asset.size is not None and progress.written != asset.size:
        raise DownloadError(f"downloaded {progress.written} bytes, asset says {asset.size}")
    if asset.checksum and asset.checksum != progress.sha.hexdigest():
        raise DownloadError("sha256 does not match the asset's checksum")
    check_audio(part, ext, progress.head, progress.written)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DownloadError) and exc.retryable


def _expired(exc: BaseException) -> bool:
    return isinstance(exc, DownloadError) and exc.expired


async def _fetch(
    client: ScenarioClient,
    asset: Asset,
    progress: _Sink,
    refresh: Callable[[], Awaitable[Asset]],
    limits: Limits,
    policy: Backoff,
) -> Asset:
    """Stream the asset into the sink, resuming after cuts and refreshing expired URLs."""
    cap = min(limits.max_bytes, asset.size) if asset.size else limits.max_bytes
    # A fresh URL that is expired again, over and over, means a clock or CDN problem.
    refreshes = dataclasses.replace(policy, limited=MAX_REFRESHES)
    retrying = Retrying(refreshes, on=_retryable, patient=_expired, hint=lambda e: 0.0 if _expired(e) else None)
    async for attempt in retrying:
        with attempt:
            if attempt.number > 1 and retrying.waits:
                asset = await refresh()  # a fresh signed URL; the bytes so far stay valid
            try:
                await _stream(client, asset, progress, cap, limits)
            except DownloadError as err:
                if err.restart:
                    await progress.reset()
                raise
            except (aiohttp.ClientError, TimeoutError) as err:
                # Cut mid-body: the next attempt resumes from what we have, with Range.
                raise DownloadError(f"download interrupted: {type(err).__name__}") from None
    return asset


async def _stream(client: ScenarioClient, asset: Asset, progress: _Sink, cap: int, limits: Limits) -> None:
    async with client.download(asset.url, offset=progress.written, if_range=progress.etag) as resp:
        if progress.written and resp.status != 206:
            await progress.reset()  # the server ignored Range (or the file changed)
        served = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if served and not served.startswith("audio/") and served != "application/octet-stream":
            raise DownloadError(f"download is {served[:40]!r}, not audio", retryable=False)
        progress.etag = resp.headers.get("ETag") or progress.etag
        total = progress.written + resp.content_length if resp.content_length is not None else None
        if total is not None and total > cap:
            raise DownloadError(f"server announced {total} bytes, more than the {cap} allowed; cut off", restart=True)
        window_start, window_bytes = time.monotonic(), 0
        while True:
            async with asyncio.timeout(limits.stall_seconds):
                chunk = await resp.content.read(CHUNK)
            if not chunk:
                break
            if progress.written + len(chunk) > cap:
                raise DownloadError(f"download ran past {cap} bytes; cut off", restart=True)
            await progress.add(chunk)
            if progress.written == total:
                break  # all the announced bytes: no need to wait for the end of the body
            window_bytes += len(chunk)
            now = time.monotonic()
            if now - window_start >= limits.stall_seconds:
                if window_bytes < limits.stall_bytes:
                    raise DownloadError(f"download stalled ({window_bytes} bytes in {limits.stall_seconds:.0f}s)")
                window_start, window_bytes = now, 0
        if total is not None and progress.written != total:
            raise DownloadError(f"download ended at {progress.written} of {total} bytes")

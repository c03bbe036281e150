"""WAV files without the stdlib's limits: headers parsed chunk by chunk, frames streamed.

`wave` refuses IEEE-float and WAVE_FORMAT_EXTENSIBLE files, both common from audio
tools. This reads the RIFF structure itself (bounded: it never trusts a chunk size past
the file), gives the sample layout, and streams frames as floats in [-1, 1] or writes
16-bit PCM, so the listening page, stitching and loops never hold a track in memory
twice.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..core.errors import BatchgenError
from ..store import files

PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
MAX_CHUNKS = 64  # chunks looked at before the data chunk
_SCALE16 = 1 / 32768.0
_LITTLE = sys.byteorder == "little"


class WavError(ValueError):
    """A file that is not a WAV this module can read."""


@dataclass(frozen=True, slots=True)
class WavInfo:
    """Layout of a WAV file's samples."""

    channels: int
    rate: int
    bits: int
    is_float: bool
    data_offset: int
    data_bytes: int  # as present in the file (a header that overstates it is clamped)

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8

    @property
    def frames(self) -> int:
        return self.data_bytes // self.frame_bytes

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def read_info(path: Path) -> WavInfo:
    """Parse the header of a WAV file; `WavError` if it is not one this module reads, or not
    a regular file at all (a FIFO planted in its place would block a plain open for ever)."""
    try:
        fh = files.open_regular(path)
    except BatchgenError as err:
        raise WavError(str(err)) from None
    with fh:
        return parse(fh, os.fstat(fh.fileno()).st_size)


def parse(fh: BinaryIO, size: int) -> WavInfo:
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    for _ in range(MAX_CHUNKS):
        header = fh.read(8)
        if len(header) < 8:
            break
        cid, length = header[:4], struct.unpack("<I", header[4:])[0]
        body_at = pos + 8
        if cid == b"fmt ":
            raw = fh.read(min(length, 64))
            if len(raw) < 16:
                raise WavError("WAV fmt chunk is too short")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", raw[:16])
            if tag == EXTENSIBLE and len(raw) >= 26:
                tag = struct.unpack("<H", raw[24:26])[0]  # the sub-format GUID's first two bytes
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise WavError("WAV data chunk before its fmt chunk")
            return _layout(fmt, body_at, min(length, max(0, size - body_at)))
        pos = body_at + length + (length & 1)
        if pos > size:
            break
        fh.seek(pos)
    raise WavError("WAV file has no data chunk")


def _layout(fmt: tuple[int, int, int, int], offset: int, data_bytes: int) -> WavInfo:
    tag, channels, rate, bits = fmt
    if not 1 <= channels <= 32 or not 1000 <= rate <= 768_000:
        raise WavError(f"WAV with {channels} channels at {rate} Hz is not audio this reads")
    if (tag, bits) not in ((PCM, 16), (PCM, 24), (PCM, 32), (FLOAT, 32), (PCM, 8)):
        raise WavError(f"WAV sample format {tag}/{bits}-bit is not supported")
    frame = channels * bits // 8
    return WavInfo(channels, rate, bits, tag == FLOAT, offset, data_bytes - data_bytes % frame)


def frames(
    path: Path, info: WavInfo, start: int = 0, count: int | None = None, block: int = 65536
) -> Iterator[array[float]]:
    """Interleaved samples as floats in [-1, 1], `block` frames at a time, from frame `start`."""
    end = info.frames if count is None else min(info.frames, start + count)
    with path.open("rb") as fh:
        fh.seek(info.data_offset + start * info.frame_bytes)
        at = start
        while at < end:
            n = min(block, end - at)
            raw = fh.read(n * info.frame_bytes)
            if not raw:
                return
            yield decode(raw, info)
            at += n


def decode(raw: bytes, info: WavInfo) -> array[float]:
    """Little-endian sample bytes to floats in [-1, 1]."""
    if info.is_float:
        out = array("f")
        out.frombytes(raw[: len(raw) - len(raw) % 4])
        if not _LITTLE:
            out.byteswap()
        return array("f", (min(1.0, max(-1.0, x)) for x in out))
    if info.bits == 16:
        ints = array("h")
        ints.frombytes(raw[: len(raw) - len(raw) % 2])
        if not _LITTLE:
            ints.byteswap()
        return array("f", map(_SCALE16.__mul__, ints))  # map of a bound method: C speed
    if info.bits == 8:
        return array("f", ((b - 128) / 128.0 for b in raw))
    width = info.bits // 8
    scale = float(1 << (info.bits - 1))
    return array(
        "f",
        (
            int.from_bytes(raw[i : i + width], "little", signed=True) / scale
            for i in range(0, len(raw) - width + 1, width)
        ),
    )


def encode(samples: array[float] | list[float], info: WavInfo) -> bytes:
    """Floats in [-1, 1] to little-endian sample bytes in `info`'s format (clipped, rounded)."""
    if info.is_float:
        floats = array("f", (min(1.0, max(-1.0, x)) for x in samples))
        if not _LITTLE:
            floats.byteswap()
        return floats.tobytes()
    if info.bits == 8:
        return bytes(max(0, min(255, round(x * 128.0) + 128)) for x in samples)
    top = (1 << (info.bits - 1)) - 1
    if info.bits == 16:
        ints = array("h", (max(-top - 1, min(top, round(x * (top + 1)))) for x in samples))
        if not _LITTLE:
            ints.byteswap()
        return ints.tobytes()
    width = info.bits // 8
    return b"".join(
        max(-top - 1, min(top, round(x * (top + 1)))).to_bytes(width, "little", signed=True) for x in samples
    )


def header(info: WavInfo, frames: int) -> bytes:
    """A canonical header (RIFF, fmt, data) for `frames` frames in `info`'s sample format."""
    data = frames * info.frame_bytes
    tag = FLOAT if info.is_float else PCM
    rate, block = info.rate, info.frame_bytes
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, tag, info.channels, rate, rate * block, block, info.bits)
        + b"data"
        + struct.pack("<I", data)
    )


def layout(channels: int, rate: int, bits: int = 16, *, is_float: bool = False) -> WavInfo:
    """The `WavInfo` of a canonical file of this format (the data starts at byte 44)."""
    return WavInfo(channels, rate, bits, is_float, 44, 0)

"""Metadata inside delivered files: RIFF LIST/INFO, BWF bext and smpl for WAV, Vorbis comments for FLAC and Ogg.

Pure functions from a `Tags` value to bytes. The layouts are small and fixed, so they
are written here rather than through a tagging library:

* WAV: `LIST`/`INFO` with INAM (title), ICMT (comment), ISFT (software), ICRD (date);
  `bext` version 2 (EBU Tech 3285): Description (256 bytes), Originator (32),
  OriginatorReference (32), OriginationDate (10), OriginationTime (8), TimeReference
  (uint64), Version, UMID (64), loudness fields (int16, x100; 0x7FFF when unknown),
  180 reserved bytes, then CodingHistory. Both chunks go before `data`, where every
  reader looks; LIST first, so readers that keep one comment keep the fuller one.
* FLAC: a VORBIS_COMMENT metadata block (TITLE, COMMENT, DESCRIPTION, ENCODER, DATE,
  and SEED, MODEL, JOBID, PROMPT) replacing any the encoder wrote; Ogg Vorbis and Opus
  carry the same comments (`ogg.py` writes them).
* Loops: a WAV `smpl` chunk with one forward loop over the whole file (`dwStart` 0,
  `dwEnd` frames - 1: the end is inclusive), as Unreal's and Godot's importers and
  libsndfile read it; in Vorbis comments `LOOPSTART=0` and `LOOPLENGTH=<frames>` (RPG
  Maker, SDL_mixer), counted in the samples the file decodes to (48 kHz for Opus).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

BEXT_UNKNOWN = 0x7FFF

INFO_TEXT = 2000  # characters of a text field kept (a prompt is far shorter; a sidecar may lie)


@dataclass(frozen=True, slots=True)
class Tags:
    """What a delivered file says about itself."""

    title: str  # the track
    prompt: str
    software: str  # "batchgen 0.2.0"
    date: str  # YYYY-MM-DD
    time: str  # HH:MM:SS
    seed: int | None = None
    model: str = ""
    job_id: str = ""
    loudness: dict[str, float | None] = field(default_factory=dict)
    loop: int | None = None  # frames of a loop over the whole file; None: not a loop

    @property
    def description(self) -> str:
        """Prompt, seed, model and job id in one line; the prompt is what gives way to fit 256 bytes."""
        seed = f" | seed {self.seed}" if self.seed is not None else ""
        tail = f"{seed} | {self.model} | job {self.job_id}"
        room = 256 - len(_ascii(tail))
        prompt = _ascii(self.prompt)
        return (prompt if len(prompt) <= room else prompt[: max(0, room - 3)] + "...") + tail


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _chunk(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _fixed(text: str, size: int) -> bytes:
    return _ascii(text).encode("ascii")[:size].ljust(size, b"\0")


def info_chunk(tags: Tags) -> bytes:
    """A `LIST` chunk of type `INFO` (text fields are UTF-8, NUL-terminated)."""
    fields = [(b"INAM", tags.title), (b"ICMT", tags.prompt), (b"ISFT", tags.software), (b"ICRD", tags.date)]
    body = b"INFO" + b"".join(_chunk(tag, value[:INFO_TEXT].encode("utf-8") + b"\0") for tag, value in fields if value)
    return _chunk(b"LIST", body)


def bext_chunk(tags: Tags) -> bytes:
    """A BWF `bext` chunk, version 2, with the loudness figures when they are known."""

    def centi(key: str) -> int:
        value = tags.loudness.get(key)
        if value is None or not math.isfinite(value):
            return BEXT_UNKNOWN
        return max(-32768, min(32767, round(value * 100)))

    body = b"".join(
        [
            _fixed(tags.description, 256),
            _fixed("batchgen", 32),
            _fixed(tags.job_id, 32),
            _fixed(tags.date, 10),
            _fixed(tags.time, 8),
            struct.pack("<QH", 0, 2),
            bytes(64),  # UMID: none
            struct.pack(
                "<5h",
                centi("integratedLufs"),
                centi("loudnessRangeLu"),
                centi("truePeakDbtp"),
                centi("momentaryMaxLufs"),
                centi("shortTermMaxLufs"),
            ),
            bytes(180),
            _ascii(f"A=PCM,T={tags.software}\r\n").encode("ascii"),
        ]
    )
    return _chunk(b"bext", body)


def smpl_chunk(frames: int, rate: int) -> bytes:
    """A `smpl` chunk with one forward loop over all `frames` (its end is the last frame: inclusive)."""
    period = round(1e9 / rate) if rate > 0 else 0  # nanoseconds per sample
    head = struct.pack("<9I", 0, 0, period, 60, 0, 0, 0, 1, 0)  # manufacturer .. one loop, no sampler data
    loop = struct.pack("<6I", 0, 0, 0, max(0, frames - 1), 0, 0)  # id, forward, start, end, fraction, for ever
    return _chunk(b"smpl", head + loop)


def wav_header(fmt: bytes, tags: Tags, data_bytes: int) -> bytes:
    """RIFF header, `fmt ` (as given), smpl for a loop, bext, LIST/INFO, then the `data` chunk header."""
    extra = info_chunk(tags) + bext_chunk(tags)  # bext last: ffprobe then shows its full description
    if tags.loop is not None:
        rate = struct.unpack_from("<I", fmt, 4)[0]
        extra = smpl_chunk(tags.loop, rate) + extra
    fmt_chunk = _chunk(b"fmt ", fmt)
    riff_size = 4 + len(fmt_chunk) + len(extra) + 8 + data_bytes + (data_bytes % 2)
    return (
        b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + fmt_chunk + extra + b"data" + struct.pack("<I", data_bytes)
    )


def vorbis_comments(tags: Tags) -> list[tuple[str, str]]:
    pairs = [
        ("TITLE", tags.title),
        ("COMMENT", tags.prompt),
        ("DESCRIPTION", tags.description),
        ("ENCODER", tags.software),
        ("DATE", f"{tags.date}T{tags.time}"),
        ("PROMPT", tags.prompt),
        ("SEED", "" if tags.seed is None else str(tags.seed)),
        ("MODEL", tags.model),
        ("JOBID", tags.job_id),
    ]
    if tags.loop is not None:
        pairs += [("LOOPSTART", "0"), ("LOOPLENGTH", str(tags.loop))]
    return [(key, value[:INFO_TEXT]) for key, value in pairs if value]


def flac_with_comments(data: bytes, tags: Tags) -> bytes:
    """A FLAC file with its VORBIS_COMMENT block replaced by one holding `tags`."""
    if data[:4] != b"fLaC":
        raise ValueError("not a FLAC stream")
    pos, blocks = 4, []
    while True:
        if pos + 4 > len(data):
            raise ValueError("FLAC metadata runs past the end of the file")
        head = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        kind, last = head & 0x7F, head & 0x80
        if kind != 4:
            blocks.append((kind, data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
        if last:
            break
    vendor = tags.software.encode()
    comments = [f"{k}={v}".encode() for k, v in vorbis_comments(tags)]
    body = struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
    body += b"".join(struct.pack("<I", len(c)) + c for c in comments)
    blocks.insert(1, (4, body))  # after STREAMINFO, which must come first
    out = [b"fLaC"]
    for i, (kind, block) in enumerate(blocks):
        flag = 0x80 if i == len(blocks) - 1 else 0
        out.append(bytes([flag | kind]) + len(block).to_bytes(3, "big") + block)
    return b"".join(out) + data[pos:]


__all__ = ["Tags", "bext_chunk", "flac_with_comments", "info_chunk", "smpl_chunk", "vorbis_comments", "wav_header"]

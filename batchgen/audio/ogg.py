"""Ogg Vorbis and Ogg Opus comment headers of our own: parse the pages, swap the packet, page again.

libsndfile writes Ogg Vorbis and Opus but only the comments it knows (title, comment,
...), not `LOOPSTART`/`LOOPLENGTH` that engines read a loop from. So the comment
header (Vorbis: packet 2, type 3, "vorbis"; Opus: packet 2, "OpusTags") is rebuilt here
and the stream re-paged: the header packets on fresh pages, every audio page after them
as it was but for its sequence number and CRC (RFC 3533: the CRC covers the whole page
with its CRC field zeroed; polynomial 0x04C11DB7, initial value 0, no reflection).
The first audio packet starts on a new page in both codecs, so audio pages move as they are.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

_HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, crc, segments
_CONTINUED, _FIRST = 0x01, 0x02
_NO_GRANULE = -1  # a page on which no packet ends
_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


class OggError(ValueError):
    """A stream this module cannot re-page (not Ogg, damaged, or not Vorbis or Opus)."""


@dataclass(frozen=True, slots=True)
class Page:
    flags: int
    granule: int
    serial: int
    segments: bytes  # the lacing values
    body: bytes


def crc(data: bytes) -> int:
    """Ogg's CRC-32: zlib's reflected CRC of the bit-reversed bytes, reversed back (same polynomial)."""
    raw = zlib.crc32(data.translate(_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def pages(data: bytes) -> list[Page]:
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < _HEADER.size:
            raise OggError("a truncated Ogg page header")
        capture, version, flags, granule, serial, _seq, _crc, count = _HEADER.unpack_from(data, pos)
        if capture != b"OggS" or version != 0:
            raise OggError(f"not an Ogg page at byte {pos}")
        lacing = data[pos + _HEADER.size : pos + _HEADER.size + count]
        start = pos + _HEADER.size + count
        body = data[start : start + sum(lacing)]
        if len(lacing) != count or len(body) != sum(lacing):
            raise OggError("a truncated Ogg page")
        out.append(Page(flags, granule, serial, lacing, body))
        pos = start + len(body)
    return out


def _encode(page: Page, sequence: int) -> bytes:
    head = _HEADER.pack(b"OggS", 0, page.flags, page.granule, page.serial, sequence, 0, len(page.segments))
    whole = head + page.segments + page.body
    return whole[:22] + struct.pack("<I", crc(whole)) + whole[26:]


def _packets(stream: Sequence[Page], wanted: int, *, whole: bool = True) -> tuple[list[bytes], int]:
    """The first `wanted` packets, and the index of the first page after them (with `whole`, they
    must end a page: audio starts on a page of its own)."""
    packets: list[bytes] = []
    current = b""
    for index, page in enumerate(stream):
        offset = 0
        for value in page.segments:
            current += page.body[offset : offset + value]
            offset += value
            if value < 255:
                packets.append(current)
                current = b""
        if len(packets) >= wanted:
            if whole and (len(packets) > wanted or current):
                raise OggError("audio shares a page with the headers")
            return packets[:wanted], index + 1
    raise OggError("the stream ends inside its headers")


def _paged(packets: Sequence[bytes], serial: int) -> list[Page]:
    """Header packets laced onto pages of at most 255 segments, granule 0 where a packet ends."""
    out: list[Page] = []
    segments: list[int] = []
    body = b""
    flags, ends = 0, False
    for packet in packets:
        lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
        offset = 0
        for i, value in enumerate(lacing):
            segments.append(value)
            body += packet[offset : offset + value]
            offset += value
            ends = ends or i == len(lacing) - 1
            if len(segments) == 255:
                out.append(Page(flags, 0 if ends else _NO_GRANULE, serial, bytes(segments), body))
                continued = i < len(lacing) - 1
                segments, body, flags, ends = [], b"", _CONTINUED if continued else 0, False
    if segments:
        out.append(Page(flags, 0, serial, bytes(segments), body))
    return out


def with_comments(
    data: bytes, comments: Sequence[tuple[str, str]], *, lead: int = 0, frames: int | None = None
) -> bytes:
    """The Ogg Vorbis or Opus stream `data` with its comments replaced by `comments` (vendor kept).

    For Opus, `lead` samples more are skipped at the start (OpusHead's pre-skip) and the
    stream ends after `frames` samples (the last page's granule position): a loop encoded
    with its own end before it and its start after it decodes as exactly the loop, its
    first and last frames encoded in context, so it joins its own start with no click.
    """
    stream = pages(data)
    if not stream:
        raise OggError("an empty Ogg stream")
    first, _ = _packets(stream, 1, whole=False)
    if first[0].startswith(b"\x01vorbis"):
        wanted, magic, framing = 3, b"\x03vorbis", b"\x01"
    elif first[0].startswith(b"OpusHead"):
        wanted, magic, framing = 2, b"OpusTags", b""
    else:
        raise OggError("not Ogg Vorbis or Ogg Opus")
    headers, audio_from = _packets(stream, wanted)
    old = headers[1]
    if not old.startswith(magic) or len(old) < len(magic) + 4:
        raise OggError("a damaged comment header")
    (size,) = struct.unpack_from("<I", old, len(magic))
    vendor = old[len(magic) + 4 : len(magic) + 4 + size]
    fields = [f"{key}={value}".encode() for key, value in comments]
    packet = magic + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(fields))
    packet += b"".join(struct.pack("<I", len(f)) + f for f in fields) + framing
    serial = stream[0].serial
    audio = list(stream[audio_from:])
    ident = headers[0]
    if lead or frames is not None:
        ident, audio = _trimmed(ident, audio, lead, frames)
    head = [Page(_FIRST, 0, serial, bytes([len(ident)]), ident)] if len(ident) < 255 else None
    if head is None:
        head = _paged([ident], serial)
        head[0] = Page(head[0].flags | _FIRST, head[0].granule, serial, head[0].segments, head[0].body)
    new = head + _paged([packet, *headers[2:]], serial) + audio
    return b"".join(_encode(page, sequence) for sequence, page in enumerate(new))


def _trimmed(ident: bytes, audio: list[Page], lead: int, frames: int | None) -> tuple[bytes, list[Page]]:
    """An Opus stream's pre-skip raised by `lead` and its end set after `frames` samples."""
    if not ident.startswith(b"OpusHead") or len(ident) < 12 or not audio:
        raise OggError("start and end trimming is for Ogg Opus")
    skip = struct.unpack_from("<H", ident, 10)[0] + lead
    if skip > 0xFFFF:
        raise OggError("a lead longer than Opus' pre-skip can hold")
    ident = ident[:10] + struct.pack("<H", skip) + ident[12:]
    if frames is not None:
        end = skip + frames
        last, before = audio[-1], audio[-2].granule if len(audio) > 1 else 0
        if not before < end <= last.granule:
            raise OggError("the end falls outside the last page")
        audio = [*audio[:-1], Page(last.flags, end, last.serial, last.segments, last.body)]
    return ident, audio


def comments(data: bytes) -> list[tuple[str, str]]:
    """The comments of an Ogg Vorbis or Opus stream, in order (for tests and checks)."""
    stream = pages(data)
    first, _ = _packets(stream, 1, whole=False)
    magic = b"\x03vorbis" if first[0].startswith(b"\x01vorbis") else b"OpusTags"
    packet = _packets(stream, 2, whole=False)[0][1]
    pos = len(magic)
    (size,) = struct.unpack_from("<I", packet, pos)
    pos += 4 + size
    (count,) = struct.unpack_from("<I", packet, pos)
    pos += 4
    out = []
    for _ in range(count):
        (size,) = struct.unpack_from("<I", packet, pos)
        key, _, value = packet[pos + 4 : pos + 4 + size].decode("utf-8", "replace").partition("=")
        out.append((key, value))
        pos += 4 + size
    return out


__all__ = ["OggError", "comments", "crc", "pages", "with_comments"]

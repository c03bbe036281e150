"""A take's waveform as the page draws it: min and max per column, as an SVG path.

Read a block at a time (first channel), so a long take never sits in memory whole: a
WAV with the standard library; MP3, Ogg (Vorbis, Opus) and FLAC through soundfile when
the `deliver` extra is installed. `columns` says why when a file cannot be drawn.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..audio import wavfile

COLUMNS = 200  # min and max per column: 400 points per waveform
HEIGHT = 40
BLOCK = 65536  # frames read at a time when drawing a waveform


def waveform(samples: Sequence[int], columns: int = COLUMNS, height: int = HEIGHT) -> list[tuple[int, int]]:
    """Per column, the (top, bottom) pixel rows spanned by the samples' min and max.

    Samples are 16-bit; row 0 is the top of a `height`-pixel box, silence sits in the
    middle. Fewer samples than columns give one column per sample.
    """
    n = len(samples)
    if n == 0:
        return []
    columns = min(columns, n)
    half = height / 2
    out = []
    for c in range(columns):
        chunk = samples[c * n // columns : (c + 1) * n // columns] or samples[c * n // columns : c * n // columns + 1]
        hi, lo = max(chunk), min(chunk)
        top = int(half - hi / 32768 * half)
        bottom = int(half - lo / 32768 * half)
        out.append((max(0, min(height - 1, top)), max(0, min(height, max(bottom, top + 1)))))
    return out


def svg_path(columns: Sequence[tuple[int, int]]) -> str:
    """A compact SVG path of vertical strokes, one per column, in relative moves."""
    if not columns:
        return ""
    parts = []
    prev_bottom = 0
    for x, (top, bottom) in enumerate(columns):
        if x == 0:
            parts.append(f"M0 {top}v{bottom - top}")
        else:
            parts.append(f"m1 {top - prev_bottom}v{bottom - top}")
        prev_bottom = bottom
    return "".join(parts)


def wav_columns(path: Path, columns: int = COLUMNS, height: int = HEIGHT) -> tuple[list[tuple[int, int]], float]:
    """The waveform columns of a WAV's first channel and its duration, streamed block by block.

    Memory stays at one block however long the file: a 400 MB asset is never read whole.
    16-bit PCM (what MusicGen and the simulator write) is reduced at C speed.
    """
    info = wavfile.read_info(path)
    total = info.frames
    if total == 0:
        return [], 0.0
    columns = min(columns, total)
    lows, highs = [1.0] * columns, [-1.0] * columns
    at = 0
    for first, scale in _first_channel(path, info):
        n = len(first)
        c = at * columns // total
        while c < columns:
            lo, hi = c * total // columns, (c + 1) * total // columns
            start, end = max(lo, at) - at, min(hi, at + n) - at
            if start >= n:
                break
            part = first[start:end] if end > start else first[start : start + 1]
            lows[c], highs[c] = min(lows[c], min(part) * scale), max(highs[c], max(part) * scale)
            if hi > at + n:
                break
            c += 1
        at += n
    half = height / 2
    out = []
    for low, high in zip(lows, highs, strict=True):
        top, bottom = int(half - high * half), int(half - low * half)
        out.append((max(0, min(height - 1, top)), max(0, min(height, max(bottom, top + 1)))))
    return out, info.seconds


def _first_channel(path: Path, info: wavfile.WavInfo) -> Iterator[tuple[array[Any], float]]:
    """Blocks of the first channel's samples, with the factor that makes them fractions of full scale.

    16-bit PCM stays as ints, so the min and max of each column run in C.
    """
    if info.bits != 16 or info.is_float:
        for block in wavfile.frames(path, info, block=BLOCK):
            yield block[:: info.channels], 1.0
        return
    with path.open("rb") as fh:
        fh.seek(info.data_offset)
        left = info.data_bytes
        while left > 0:
            raw = fh.read(min(left, BLOCK * info.frame_bytes))
            if not raw:
                return
            left -= len(raw)
            ints = array("h")
            ints.frombytes(raw[: len(raw) - len(raw) % 2])
            if sys.byteorder != "little":
                ints.byteswap()
            yield ints[:: info.channels], 1 / 32768.0


DECODED = (".mp3", ".ogg", ".opus", ".flac")  # formats soundfile reads, when it is installed


class NoWaveform(Exception):
    """Why a file has no waveform on the page (its format, or the missing extra)."""


def columns(path: Path, width: int = COLUMNS, height: int = HEIGHT) -> tuple[list[tuple[int, int]], float]:
    """The waveform columns of any audio file batchgen draws, and its duration; `NoWaveform` says why not."""
    suffix = path.suffix.lower()
    if suffix == ".wav":
        return wav_columns(path, width, height)
    if suffix not in DECODED:
        raise NoWaveform(f"no waveform for {suffix[1:].upper() or 'this'} files: the player still plays it")
    try:
        import soundfile
    except ImportError:
        raise NoWaveform("no waveform: drawing MP3, Ogg and FLAC needs the deliver extra") from None
    try:
        info = soundfile.info(str(path))
        total = max(1, int(info.frames))
        width = min(width, total)
        lows, highs = [1.0] * width, [-1.0] * width
        at = 0
        for block in soundfile.blocks(str(path), blocksize=BLOCK, dtype="float32", always_2d=True):
            first = block[:, 0]
            for c in range(at * width // total, min(width, (at + len(first)) * width // total + 1)):
                lo, hi = max(c * total // width - at, 0), min((c + 1) * total // width - at, len(first))
                if hi > lo:
                    part = first[lo:hi]
                    lows[c], highs[c] = min(lows[c], float(part.min())), max(highs[c], float(part.max()))
            at += len(first)
    except (RuntimeError, ValueError, OSError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise NoWaveform(f"no waveform: the file does not decode ({str(err)[:80]})") from None
    half = height / 2
    out = []
    for low, high in zip(lows, highs, strict=True):
        if low > high:  # a column no block reached (a short file): silence
            low = high = 0.0
        top, bottom = int(half - high * half), int(half - low * half)
        out.append((max(0, min(height - 1, top)), max(0, min(height, max(bottom, top + 1)))))
    return out, float(info.duration)

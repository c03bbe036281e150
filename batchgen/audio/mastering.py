"""One delivered file from one take: decode, resample, level, limit, quantize, tag, encode.

Decoding and FLAC encoding go through `soundfile` (libsndfile), the signal work through
`loudness.py` (numpy and scipy): the `deliver` extra. A WAV take delivered as WAV with
nothing to change keeps its samples bit for bit; only the tags are new. Processed audio
is written as 16-bit PCM with TPDF dither (24-bit when the source had more than 16
bits), the dither seeded from the source's sha256 so the same take makes the same file.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.errors import BatchgenError
from . import wavfile
from .tags import Tags, flac_with_comments, wav_header

MAX_SECONDS = 15 * 60  # audio is processed in memory: longer files are refused
# ... and so is what it becomes: at most 15 minutes of 48 kHz stereo, in samples, in or out
# (a 10-minute take at --sample-rate 384000 would otherwise need gigabytes).
MAX_SAMPLES = MAX_SECONDS * 48000 * 2
GATE_SECONDS = 0.4  # one BS.1770 gating block: anything shorter has no integrated loudness
TOLERANCE = 0.5  # LU: a delivered file further than this from its target is a problem, named
FINE = ("PCM_24", "PCM_32", "FLOAT", "DOUBLE")  # sources kept at 24 bits


class MasteringError(BatchgenError):
    """A take that cannot be made into a delivered file."""


@dataclass(frozen=True, slots=True)
class Settings:
    loudness: float | None  # LUFS target; None: the level as it is
    ceiling: float | None  # dBTP; None: no limiter
    sample_rate: int | None
    fmt: str  # "wav" or "flac"


def master(source: Path, settings: Settings, tags: Tags, seed: int) -> tuple[bytes, dict[str, float | None], float]:
    """The delivered file's bytes, its measured loudness figures and its length in seconds."""
    import numpy as np
    import soundfile as sf

    from .loudness import measure, normalize, resample

    try:
        info = sf.info(str(source))
        _check_size(source.name, info.frames, info.samplerate, info.channels, settings.sample_rate)
        audio, rate = sf.read(str(source), dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise MasteringError(f"{source.name}: cannot decode: {err}") from None
    if len(audio) == 0:
        raise MasteringError(f"{source.name} holds no audio (0 frames)")
    if not np.isfinite(audio).all():
        raise MasteringError(f"{source.name} holds samples that are not numbers (NaN or infinite): a damaged take")
    bits = 24 if info.subtype in FINE else 16
    untouched = settings.loudness is None and settings.ceiling is None and settings.sample_rate in (None, rate)
    if untouched and settings.fmt == "wav" and info.format == "WAV" and info.subtype in ("PCM_16", "PCM_24"):
        return _wav_as_is(source, audio, rate, tags)
    if settings.sample_rate not in (None, rate):
        audio, rate = resample(audio, rate, settings.sample_rate), settings.sample_rate
    if settings.loudness is not None:
        _check_levellable(source.name, len(audio) / rate)
    if not untouched:
        # A DC offset is inaudible, but it is in every sample's peak: left in, the limiter
        # would hold the level far under the target. Taken out before levelling.
        audio = audio - audio.mean(axis=0)
        audio, _ = normalize(audio, rate, settings.loudness, settings.ceiling)
    pcm = _quantize(audio, bits, np.random.default_rng(seed) if not untouched else None)
    measured = measure(pcm.astype("float64") / float(1 << (bits - 1)), rate).as_dict()
    _check_target(source.name, measured, settings.loudness)
    tags = replace(tags, loudness=measured)
    seconds = len(pcm) / rate
    if settings.fmt == "flac":
        buffer = io.BytesIO()
        sf.write(buffer, pcm, rate, format="FLAC", subtype=f"PCM_{bits}")
        return flac_with_comments(buffer.getvalue(), tags), measured, seconds
    body = _pcm_bytes(pcm, bits)
    head = wav_header(_fmt(pcm.shape[1], rate, bits), tags, len(body))
    return head + body + (b"\0" if len(body) % 2 else b""), measured, seconds


def _check_size(name: str, frames: int, rate: int, channels: int, to: int | None) -> None:
    """Refuse, before decoding, a take too long, or one that would become too large at `to` Hz."""
    if rate <= 0 or frames / rate > MAX_SECONDS:
        raise MasteringError(f"{name} lasts {frames / max(rate, 1):.0f}s; deliver takes at most {MAX_SECONDS}s")
    made = frames * (to or rate) / rate * channels
    if max(made, frames * channels) > MAX_SAMPLES:
        raise MasteringError(
            f"{name} at {to or rate} Hz would be {made / 1e6:.0f} M samples; deliver makes at most "
            f"{MAX_SAMPLES / 1e6:.0f} M (15 min of 48 kHz stereo): a lower --sample-rate, or a shorter take"
        )


def _check_levellable(name: str, seconds: float) -> None:
    if seconds < GATE_SECONDS:
        raise MasteringError(
            f"{name} lasts {seconds * 1000:.0f} ms, less than one 400 ms loudness block: it has no integrated "
            "loudness to level by; deliver it without --loudness"
        )


def _check_target(name: str, measured: dict[str, float | None], target: float | None) -> None:
    """A delivered file that misses its loudness target is a problem, named: never silent."""
    if target is None:
        return
    reached = measured.get("integratedLufs")
    if reached is None:
        raise MasteringError(f"{name} is silent: no gain can bring it to {target:g} LUFS")
    if abs(reached - target) > TOLERANCE:
        peak = measured.get("truePeakDbtp")
        raise MasteringError(
            f"{name} reaches {reached:g} LUFS, not the {target:g} asked (true peak {peak} dBTP): "
            "too dynamic for this ceiling; a lower target or a higher --true-peak"
        )


def _wav_as_is(source: Path, audio: Any, rate: int, tags: Tags) -> tuple[bytes, dict[str, float | None], float]:
    """The source's PCM bytes unchanged under a new header with the tags."""
    from .loudness import measure

    info = wavfile.read_info(source)
    measured = measure(audio, rate).as_dict()
    with source.open("rb") as fh:
        fh.seek(info.data_offset)
        data = fh.read(info.data_bytes)
    header = wav_header(_fmt(info.channels, info.rate, info.bits), replace(tags, loudness=measured), len(data))
    return header + data + (b"\0" if len(data) % 2 else b""), measured, info.seconds


def _quantize(audio: Any, bits: int, rng: Any | None) -> Any:
    """Floats in [-1, 1) to integers; with `rng` (audio that was processed), TPDF dither of one
    step at 16 bits. Unprocessed samples decoded from integers come back exactly."""
    import numpy as np

    scale = float(1 << (bits - 1))
    values = audio * scale
    if rng is not None and bits == 16:
        values = values + rng.random(values.shape) - rng.random(values.shape)
    return np.clip(np.round(values), -scale, scale - 1).astype(np.int16 if bits == 16 else np.int32)


def _pcm_bytes(pcm: Any, bits: int) -> bytes:
    """Little-endian PCM: int16 as it is, 24-bit as the low three bytes of each int32."""
    import numpy as np

    if bits == 16:
        return bytes(pcm.astype("<i2").tobytes())
    return bytes(pcm.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes())


def _fmt(channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)


__all__ = ["MasteringError", "Settings", "master"]

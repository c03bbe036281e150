"""One delivered file from one take: decode, resample, level, limit, quantize or encode, tag.

Decoding and encoding go through `soundfile` (libsndfile), the signal work through
`loudness.py` (numpy and scipy): the `deliver` extra; no ffmpeg at run time. A WAV take
delivered as WAV with nothing to change keeps its samples bit for bit; only the tags
are new. Processed audio is written as 16-bit PCM with TPDF dither (24-bit when the
source had more than 16 bits), the dither seeded from the source's sha256 so the same
take makes the same file. Ogg Vorbis, Ogg Opus (always 48 kHz) and MP3 are encoded
from the levelled floats, then decoded again: their true peak and loudness are measured
on what a player will decode (lossy encoding adds inter-sample peaks; a peak over the
ceiling is limited off and the file encoded again). A loop is processed as a circle.

libsndfile sets lossy bitrates through one "compression level" from 0 (best) to 1:
Vorbis quality Q (oggenc's 0..10 scale) is level 1 - Q/10; an Opus bitrate of B kbps
is level 1 - (B / channels - 6) / 250 (libopus' 6..256 kbps a channel); an MP3 bitrate
B is constant (CBR) at level (hi - B) / (hi - lo) with [lo, hi] = [32, 320] kbps at
32 kHz and above (MPEG-1), [8, 160] from 16 kHz (MPEG-2) and [8, 64] below (MPEG-2.5).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.errors import BatchgenError
from . import ogg, wavfile
from .tags import Tags, flac_with_comments, vorbis_comments, wav_header

MAX_SECONDS = 15 * 60  # audio is processed in memory: longer files are refused
# ... and so is what it becomes: at most 15 minutes of 48 kHz stereo, in samples, in or out
# (a 10-minute take at --sample-rate 384000 would otherwise need gigabytes).
MAX_SAMPLES = MAX_SECONDS * 48000 * 2
TOLERANCE = 0.5  # LU: a delivered file further than this from its target is a problem, named
FINE = ("PCM_24", "PCM_32", "FLOAT", "DOUBLE")  # sources kept at 24 bits
LOSSY = ("ogg", "opus", "mp3")
FORMATS = ("wav", "flac", *LOSSY)
OPUS_RATE = 48000  # Opus always decodes at 48 kHz
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
QUALITY = 6.0  # Ogg Vorbis, oggenc's scale: about 192 kbps for stereo
BITRATE = {"opus": 128, "mp3": 192}  # kbps, the whole file (all channels)
LEAD, TAIL = 9600, 960  # an Opus loop's own end encoded before it (200 ms), and its start after (20 ms)
SILENT_LUFS = -70.0  # quieter than this (or a true peak under SILENT_PEAK) is not raised: refused
SILENT_PEAK = -60.0


class MasteringError(BatchgenError):
    """A take that cannot be made into a delivered file."""


@dataclass(frozen=True, slots=True)
class Settings:
    loudness: float | None  # LUFS target; None: the level as it is
    ceiling: float | None  # dBTP; None: no limiter
    sample_rate: int | None
    fmt: str  # one of FORMATS
    quality: float | None = None  # Ogg Vorbis quality, 0..10 (QUALITY when None)
    bitrate: int | None = None  # Opus and MP3, kbps (BITRATE when None)
    loop: bool = False  # a loop: processed as a circle, delivered with its loop points


@dataclass(frozen=True, slots=True)
class Mastered:
    """A delivered file: its bytes, what was measured on what it decodes to, and its length."""

    data: bytes
    measured: dict[str, Any]
    frames: int
    rate: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def master(source: Path, settings: Settings, tags: Tags, seed: int) -> Mastered:
    """The delivered file, levelled and limited as `settings` ask, tagged, and measured."""
    import numpy as np

    from .loudness import normalize, resample

    audio, rate, subtype, kind = _decode(source, settings)
    bits = 24 if subtype in FINE else 16
    out_rate = OPUS_RATE if settings.fmt == "opus" else settings.sample_rate or rate
    untouched = settings.loudness is None and settings.ceiling is None and out_rate == rate
    if untouched and settings.fmt == "wav" and kind == "WAV" and subtype in ("PCM_16", "PCM_24"):
        return _wav_as_is(source, audio, rate, replace(tags, loop=len(audio) if settings.loop else None))
    if settings.fmt == "mp3" and out_rate not in MP3_RATES:
        raise MasteringError(f"{source.name}: MP3 has no {out_rate} Hz; --sample-rate 48000 or lower")
    if out_rate != rate:
        audio, rate = resample(audio, rate, out_rate, loop=settings.loop), out_rate
    if settings.loudness is not None:
        _check_levellable(source.name, audio, rate, settings.loop)
    if not untouched:
        # A DC offset is inaudible, but it is in every sample's peak: left in, the limiter
        # would hold the level far under the target. Taken out before levelling.
        audio = audio - audio.mean(axis=0)
        audio, _ = normalize(audio, rate, settings.loudness, settings.ceiling, loop=settings.loop)
    tags = replace(tags, loop=len(audio) if settings.loop else None)
    if settings.fmt in LOSSY:
        data, decoded = _lossy(audio, rate, settings, tags)
    else:
        pcm = _quantize(audio, bits, np.random.default_rng(seed) if not untouched else None)
        decoded = pcm.astype("float64") / float(1 << (bits - 1))
        data = b""
    measured = _measured(decoded, rate, settings)
    _check_target(source.name, measured, settings.loudness)
    if settings.fmt not in LOSSY:
        data = _pcm_file(pcm, rate, bits, settings.fmt, replace(tags, loudness=measured))
    return Mastered(data, measured, len(decoded), rate)


def _decode(source: Path, settings: Settings) -> tuple[Any, int, str, str]:
    """The take's samples as floats, its rate, subtype and container; refused when unusable."""
    import numpy as np
    import soundfile as sf

    try:
        info = sf.info(str(source))
        to = OPUS_RATE if settings.fmt == "opus" else settings.sample_rate
        _check_size(source.name, info.frames, info.samplerate, info.channels, to)
        audio, rate = sf.read(str(source), dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise MasteringError(f"{source.name}: cannot decode: {err}") from None
    if len(audio) == 0:
        raise MasteringError(f"{source.name} holds no audio (0 frames)")
    if not np.isfinite(audio).all():
        raise MasteringError(f"{source.name} holds samples that are not numbers (NaN or infinite): a damaged take")
    if settings.fmt == "mp3" and audio.shape[1] > 2:
        raise MasteringError(f"{source.name} has {audio.shape[1]} channels; MP3 holds two at most")
    return audio, rate, info.subtype, info.format


def _measured(decoded: Any, rate: int, settings: Settings) -> dict[str, Any]:
    """Loudness figures of what the file decodes to, and the measure it was levelled and is judged by."""
    from .loudness import level_of, measure, true_peak

    figures: dict[str, Any] = measure(decoded, rate).as_dict()
    if settings.loop:
        peak = true_peak(decoded, loop=True)
        figures["truePeakDbtp"] = round(peak, 2) if peak != float("-inf") else None
    level, by = level_of(decoded, rate)
    figures["levelledBy"] = by if settings.loudness is not None else None
    if by == "clip":
        figures["clipLufs"] = round(level, 2) if level != float("-inf") else None
    figures["target"] = settings.loudness
    return figures


def _pcm_file(pcm: Any, rate: int, bits: int, fmt: str, tags: Tags) -> bytes:
    import soundfile as sf

    if fmt == "flac":
        buffer = io.BytesIO()
        # soundfile reads int32 as full-scale 32-bit: 24-bit values go in its top three bytes.
        sf.write(buffer, pcm if bits == 16 else pcm << 8, rate, format="FLAC", subtype=f"PCM_{bits}")
        return flac_with_comments(buffer.getvalue(), tags)
    body = _pcm_bytes(pcm, bits)
    head = wav_header(_fmt(pcm.shape[1], rate, bits), tags, len(body))
    return head + body + (b"\0" if len(body) % 2 else b"")


def _lossy(audio: Any, rate: int, settings: Settings, tags: Tags) -> tuple[bytes, Any]:
    """Encoded, and decoded again; a true peak the encoding pushed over the ceiling is limited off."""
    from .loudness import limit, true_peak

    data = _encode(audio, rate, settings, tags)
    decoded = _decoded(data)
    if settings.ceiling is not None:
        over = true_peak(decoded, loop=settings.loop) - settings.ceiling
        if over > 0:
            audio = limit(audio, rate, settings.ceiling - 0.05 - over, loop=settings.loop)
            data = _encode(audio, rate, settings, tags)
            decoded = _decoded(data)
    return data, decoded


def _encode(audio: Any, rate: int, settings: Settings, tags: Tags) -> bytes:
    """Ogg Vorbis, Ogg Opus or MP3 through libsndfile, with the take's tags (and loop points)."""
    import numpy as np
    import soundfile as sf

    channels = audio.shape[1]
    buffer = io.BytesIO()
    if settings.fmt == "mp3":
        level = mp3_level(settings.bitrate or BITRATE["mp3"], rate)
        with sf.SoundFile(
            buffer,
            "w",
            rate,
            channels,
            "MPEG_LAYER_III",
            format="MP3",
            compression_level=level,
            bitrate_mode="CONSTANT",
        ) as fh:
            fh.title, fh.comment, fh.date = tags.title[:250], tags.description[:250], tags.date
            fh.write(np.clip(audio, -1.0, 1.0))
        return buffer.getvalue()
    if settings.fmt == "opus":
        subtype, level = "OPUS", opus_level(settings.bitrate or BITRATE["opus"], channels)
    else:
        subtype, level = "VORBIS", 1.0 - (QUALITY if settings.quality is None else settings.quality) / 10.0
    primed = settings.fmt == "opus" and settings.loop and len(audio) > LEAD + TAIL
    whole = np.concatenate([audio[-LEAD:], audio, audio[:TAIL]]) if primed else audio
    with sf.SoundFile(buffer, "w", rate, channels, subtype, format="OGG", compression_level=level) as fh:
        fh.write(np.clip(whole, -1.0, 1.0))
    try:
        if primed:  # the loop's end encoded before it and its start after it, skipped and cut on decoding
            return ogg.with_comments(buffer.getvalue(), vorbis_comments(tags), lead=LEAD, frames=len(audio))
        return ogg.with_comments(buffer.getvalue(), vorbis_comments(tags))
    except ogg.OggError as err:
        if primed:  # pages that leave no room to cut the end: the loop as it is, its edges unprimed
            return _encode(audio, rate, replace(settings, loop=False), tags)
        raise MasteringError(f"libsndfile wrote an Ogg stream batchgen cannot tag: {err}") from None


def _decoded(data: bytes) -> Any:
    import soundfile as sf

    audio, _ = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    return audio


def opus_level(kbps: int, channels: int) -> float:
    """libsndfile's compression level for an Opus file of `kbps` in all (6..256 kbps a channel)."""
    each = min(256.0, max(6.0, kbps / channels))
    return min(1.0, max(0.0, 1.0 - (each - 6.0) / 250.0))


def mp3_level(kbps: int, rate: int) -> float:
    """libsndfile's compression level for constant-bitrate MP3 at `kbps` (see the module's notes)."""
    low, high = (32, 320) if rate >= 32000 else (8, 160) if rate >= 16000 else (8, 64)
    chosen = min(high, max(low + 1, kbps))  # level 1.0 itself is refused by libsndfile
    return (high - chosen) / (high - low)


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


def _check_levellable(name: str, audio: Any, rate: int, loop: bool) -> None:
    """A near-silent take is refused rather than raised by 50 dB into its noise."""
    from .loudness import level_of, true_peak

    level, by = level_of(audio, rate)
    peak = true_peak(audio, loop=loop)
    if level < SILENT_LUFS or peak < SILENT_PEAK:
        shown = "silent" if level == float("-inf") else f"{level:.1f} LUFS ({by}), true peak {peak:.1f} dBTP"
        raise MasteringError(
            f"{name} is near silent ({shown}): under {SILENT_LUFS:g} LUFS or {SILENT_PEAK:g} dBTP it is not "
            "raised to a loudness; deliver it without --loudness"
        )


def _check_target(name: str, measured: dict[str, Any], target: float | None) -> None:
    """A delivered file that misses its loudness target, by the measure it was levelled by, is a
    problem, named: never silent."""
    if target is None:
        return
    reached = measured.get("clipLufs" if measured.get("levelledBy") == "clip" else "integratedLufs")
    if reached is None:
        raise MasteringError(f"{name} is silent: no gain can bring it to {target:g} LUFS")
    if abs(reached - target) > TOLERANCE:
        peak = measured.get("truePeakDbtp")
        raise MasteringError(
            f"{name} reaches {reached:g} LUFS, not the {target:g} asked (true peak {peak} dBTP): "
            "too dynamic for this ceiling; a lower target or a higher --true-peak"
        )


def _wav_as_is(source: Path, audio: Any, rate: int, tags: Tags) -> Mastered:
    """The source's PCM bytes unchanged under a new header with the tags."""
    info = wavfile.read_info(source)
    measured = _measured(audio, rate, Settings(None, None, None, "wav", loop=tags.loop is not None))
    with source.open("rb") as fh:
        fh.seek(info.data_offset)
        data = fh.read(info.data_bytes)
    header = wav_header(_fmt(info.channels, info.rate, info.bits), replace(tags, loudness=measured), len(data))
    return Mastered(header + data + (b"\0" if len(data) % 2 else b""), measured, len(audio), rate)


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


__all__ = ["FORMATS", "LOSSY", "Mastered", "MasteringError", "Settings", "master", "mp3_level", "opus_level"]

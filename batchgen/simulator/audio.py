"""Small, deterministic synthesis for the simulator's assets: music, sound effects, speech.

Not the real models: music is a few bars of melody over a bass line and chords, derived
from the prompt (tempo from "NN bpm", minor mode for dark words) and the seed; a sound
effect is short enveloped noise bursts and tones (seamless when asked for a loop);
speech is a voiced tone pattern, a syllable per few letters, whose length follows the
text. The same request always gives the same bytes.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import hashlib
import io
import math
import multiprocessing
import random
import re
import wave
from array import array
from typing import Any

SAMPLE_RATE = 16_000  # modest on purpose: a 30 s stereo track renders in well under a second
_TABLE_SIZE = 4096
_SINE = [math.sin(2 * math.pi * i / _TABLE_SIZE) for i in range(_TABLE_SIZE)]
_BPM = re.compile(r"(\d{2,3})\s*bpm", re.IGNORECASE)
_DARK = frozenset(
    [
        "dark",
        "sad",
        "tense",
        "epic",
        "battle",
        "mysterious",
        "boss",
        "ambush",
        "defeat",
        "drone",
        "night",
        "cave",
        "ominous",
    ]
)
_MAJOR, _MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
_PROGRESSIONS = {_MAJOR: (0, 4, 5, 3), _MINOR: (0, 5, 2, 6)}  # I-V-vi-IV / i-VI-III-VII


def _freq(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


@functools.lru_cache(maxsize=512)
def _tone(freq: float, n: int, amp: float) -> list[float]:
    """A decaying sine with a soft second harmonic, read from a wavetable for speed.

    With numpy (the `deliver` extra) the same float64 operations run as arrays, in the
    same order, so the samples are bit for bit those of the plain loop, ten times sooner.
    """
    inc = freq * _TABLE_SIZE / SAMPLE_RATE
    mask = _TABLE_SIZE - 1
    step = amp / n
    if (np := _numpy()) is not None:
        i = np.arange(n)
        table = _sine_array()
        first, second = table[(i * inc).astype(np.int64) & mask], table[(2 * i * inc).astype(np.int64) & mask]
        values: list[float] = ((first + 0.3 * second) * (amp - step * i)).tolist()
        return values
    sine = _SINE
    return [(sine[int(i * inc) & mask] + 0.3 * sine[int(2 * i * inc) & mask]) * (amp - step * i) for i in range(n)]


@functools.cache
def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # the core install: the plain loops, same samples
        return None
    return numpy


@functools.cache
def _sine_array() -> Any:
    return _numpy().array(_SINE)


def wav_size(duration: float, channels: int) -> int:
    """Bytes of the file `render` makes, known without rendering it."""
    return 44 + max(1, int(SAMPLE_RATE * duration)) * channels * 2


def render(prompt: str, seed: int, duration: float, channels: int = 2, key_seed: int | None = None) -> bytes:
    """A WAV file (16-bit PCM, 16 kHz) of `duration` seconds with `channels` channels.

    `key_seed` fixes the key and tempo (a continuation keeps those of what it continues)
    while `seed` still picks new notes.
    """
    rng = random.Random(hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest())
    style = random.Random(hashlib.sha256(f"{prompt}\x00{seed if key_seed is None else key_seed}".encode()).digest())
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    scale = _MINOR if words & _DARK else _MAJOR
    match = _BPM.search(prompt)
    bpm = min(200, max(50, int(match.group(1)))) if match else style.randrange(70, 130)
    root = style.randrange(50, 60)
    beat = max(1, int(SAMPLE_RATE * 60 / bpm))
    total = max(1, int(SAMPLE_RATE * duration))
    melody: list[float] = []
    bass: list[float] = []
    pad: list[float] = []
    degree = rng.randrange(7)
    progression = _PROGRESSIONS[scale]
    bar = 0
    while len(bass) < total:
        chord = progression[bar % 4]
        chord_notes = [root + 12 + scale[(chord + k) % 7] + 12 * ((chord + k) // 7) for k in (0, 2, 4)]
        a, b, c = (_tone(_freq(note), 4 * beat, 0.06) for note in chord_notes)
        pad.extend([x + y + z for x, y, z in zip(a, b, c, strict=True)])
        for _ in range(4):
            bass.extend(_tone(_freq(root - 12 + scale[chord]), beat, 0.28))
            # A melody that wanders the scale but leans towards the chord's notes.
            halves = 2 if rng.random() < 0.35 else 1
            for _ in range(halves):
                degree = max(0, min(13, degree + rng.choice((-2, -1, -1, 0, 1, 1, 2))))
                if rng.random() < 0.3:
                    degree = chord + rng.choice((0, 2, 4, 7))
                note = root + 24 + scale[degree % 7] + 12 * (degree // 7)
                length = beat // halves
                melody.extend(_tone(_freq(note), length, 0.22) if rng.random() > 0.08 else [0.0] * length)
            if len(melody) < len(bass):
                melody.extend([0.0] * (len(bass) - len(melody)))
        bar += 1
    # Peak amplitudes (bass .28, pad 3 x .06, melody .22, each x1.3 for the harmonic)
    # sum below 1.0, so no clipping check is needed per sample.
    # No fade in or out: MusicGen's outputs start and end at full level, and a fade at
    # every clip's edge would put a dip at every seam of a chain and at a loop's wrap.
    return wav16(_mixed(bass, pad, melody, total, channels), channels)


def _mixed(bass: list[float], pad: list[float], melody: list[float], total: int, channels: int) -> bytes:
    """16-bit PCM of bass + pad + melody (panned a little left in stereo, so channels differ)."""
    if (np := _numpy()) is not None:  # the same float64 sums and truncations as the loops below
        low = np.asarray(bass[:total]) + np.asarray(pad[:total])
        tune = np.asarray(melody[:total])
        sides = [low + tune] if channels == 1 else [low + 0.65 * tune, low + 0.35 * tune]
        pcm = np.stack([(side * 32000).astype(np.int64) for side in sides], axis=1).astype("<i2")
        return bytes(pcm.tobytes())
    low = [x + y for x, y in zip(bass[:total], pad[:total], strict=False)]
    if channels == 1:
        mixed = [int((x + m) * 32000) for x, m in zip(low, melody, strict=False)]
    else:
        mixed = [0] * (2 * total)
        mixed[0::2] = [int((x + 0.65 * m) * 32000) for x, m in zip(low, melody, strict=False)]
        mixed[1::2] = [int((x + 0.35 * m) * 32000) for x, m in zip(low, melody, strict=False)]
    return array("h", mixed).tobytes()


def wav16(pcm: bytes, channels: int, rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit WAV around raw little-endian PCM."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buf.getvalue()


def spoil(data: bytes, kind: str) -> bytes:
    """A 16-bit WAV made wrong the way a server might answer a chain hop (the `bad_hop` fault):
    another rate, channel count or sample width, MP3 instead of WAV, 5 s too long, half as long,
    or an MP3 that does not decode."""
    if kind == "undecodable":  # an MP3's ID3 header, then nothing a decoder can use
        return b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(4096)
    with wave.open(io.BytesIO(data)) as src:
        channels, rate, frames = src.getnchannels(), src.getframerate(), src.readframes(src.getnframes())
    pcm = array("h", frames)
    if kind == "long":
        pcm.extend(pcm[-5 * rate * channels :])
    elif kind == "short":
        pcm = pcm[: len(pcm) // (2 * channels) * channels]
    elif kind == "channels":
        pcm = array("h", [x for x in pcm for _ in range(2)]) if channels == 1 else pcm[0::2]
        channels = 3 - channels
    elif kind == "rate":
        rate = 22050
    elif kind in ("width", "mp3"):
        import numpy as np
        import soundfile

        buf = io.BytesIO()
        samples = np.frombuffer(pcm.tobytes(), dtype="<i2").reshape(-1, channels)
        fmt, subtype = ("MP3", "MPEG_LAYER_III") if kind == "mp3" else ("WAV", "FLOAT")
        soundfile.write(buf, samples, rate, subtype=subtype, format=fmt)
        return buf.getvalue()
    else:
        raise ValueError(f"unknown bad_hop kind {kind!r}")
    return wav16(pcm.tobytes(), channels, rate)


if __name__ == "__main__":  # regenerates manifests/melodies/theme.wav
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "manifests/melodies/theme.wav"
    with open(target, "wb") as fh:
        fh.write(render("the main theme, simple and singable, 96 bpm", 11, 5.0, channels=1))


@functools.lru_cache(maxsize=64)
def tone(duration: float, channels: int) -> bytes:
    """A plain 440 Hz tone as a valid WAV, for --fast-audio."""
    frames = max(1, int(16000 * duration))
    period = [int(12000 * math.sin(2 * math.pi * 440 * i / 16000)) for i in range(400)]  # 40 periods of 440 Hz
    samples = array("h", (period * (frames // 400 + 1))[:frames])
    if channels == 2:
        both = array("h", [0]) * (2 * frames)
        both[0::2] = samples
        both[1::2] = samples
        samples = both
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


_POOL: concurrent.futures.ProcessPoolExecutor | None = None


def render_pool() -> concurrent.futures.ProcessPoolExecutor:
    """One small process pool per process, shared by every simulator in it."""
    global _POOL
    if _POOL is None:
        # spawn, not fork: the simulator often runs beside other threads (tests, the CLI).
        _POOL = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
        # Shut it down before interpreter teardown, or its finalizer trips over
        # half-dismantled modules and prints a traceback at exit.
        atexit.register(_POOL.shutdown, wait=True, cancel_futures=True)
    return _POOL


def region(data: bytes, start: float, end: float, channels: int) -> bytes | None:
    """Frames [start, end) seconds of a 16-bit, 16 kHz WAV, in `channels` channels (None: not such a WAV)."""
    if data[:4] != b"RIFF" or len(data) < 44:
        return None
    have, rate, bits = int.from_bytes(data[22:24], "little"), int.from_bytes(data[24:28], "little"), data[34]
    if rate != SAMPLE_RATE or bits != 16 or have not in (1, 2):
        return None
    pcm = data[44:]
    frames = len(pcm) // (2 * have)
    a, b = max(0, min(frames, round(start * rate))), max(0, min(frames, round(end * rate)))
    part = pcm[a * 2 * have : b * 2 * have]
    if have == channels:
        return part
    samples = array("h")
    samples.frombytes(part)
    if have == 1:  # mono prompt for a stereo model: the same on both sides
        both = array("h", [0]) * (2 * len(samples))
        both[0::2], both[1::2] = samples, samples
        return both.tobytes()
    return array("h", ((samples[i] + samples[i + 1]) // 2 for i in range(0, len(samples), 2))).tobytes()


def encode(wav: bytes, fmt: str) -> bytes | None:
    """A 16-bit WAV as MP3 or Opus in Ogg, through soundfile (the `deliver` extra); None without it."""
    try:
        import numpy as np
        import soundfile
    except ImportError:
        return None
    with wave.open(io.BytesIO(wav)) as src:
        channels, rate, frames = src.getnchannels(), src.getframerate(), src.readframes(src.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
    buf = io.BytesIO()
    if fmt == "mp3":
        soundfile.write(buf, samples, rate, format="MP3", subtype="MPEG_LAYER_III")
    else:  # Opus runs at 48 kHz; libsndfile resamples nothing, so the stand-in is written at 48 kHz
        soundfile.write(buf, np.repeat(samples, 3, axis=0), 48000, format="OGG", subtype="OPUS")
    return buf.getvalue()


def render_kind(kind: str, prompt: str, seed: int, duration: float, channels: int, loop: bool) -> bytes:
    """The stand-in audio for a model that makes `kind` ("music", "effects" or "speech")."""
    if kind == "effects":
        samples = _effect(prompt, seed, duration, loop)
    elif kind == "speech":
        samples = _speech(prompt, seed, duration)
    else:
        return render(prompt, seed, duration, channels)
    pcm = array("h", (int(max(-1.0, min(1.0, x)) * 30000) for x in samples))
    if channels == 2:
        both = array("h", [0]) * (2 * len(pcm))
        both[0::2], both[1::2] = pcm, pcm
        pcm = both
    return wav16(pcm.tobytes(), channels)


def _effect(prompt: str, seed: int, duration: float, loop: bool) -> list[float]:
    """Noise bursts and short tones under decaying envelopes; a loop's end is folded into its start."""
    rng = random.Random(hashlib.sha256(f"effect\x00{prompt}\x00{seed}".encode()).digest())
    total = max(1, int(SAMPLE_RATE * duration))
    fold = min(total // 4, SAMPLE_RATE // 10) if loop else 0  # a loop's crossfade: 100 ms at most
    out = [0.0] * (total + fold)
    for _ in range(max(1, int(duration * rng.uniform(1.5, 4)))):
        start = rng.randrange(len(out))
        length = min(len(out) - start, int(SAMPLE_RATE * rng.uniform(0.05, 0.6)))
        freq, amp, smooth = rng.uniform(80, 2000), rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.9)
        low = 0.0
        for i in range(length):
            env = math.exp(-5.0 * i / max(1, length))
            low += smooth * (rng.uniform(-1, 1) - low)  # one-pole low-pass noise: thuds to hisses
            out[start + i] += amp * env * (0.6 * low + 0.4 * math.sin(2 * math.pi * freq * i / SAMPLE_RATE))
    if fold:  # the tail crossfades into the head: the last sample runs on into the first
        for i in range(fold):
            w = i / fold
            out[i] = out[i] * w + out[total + i] * (1 - w)
    return out[:total]


def _speech(text: str, seed: int, duration: float) -> list[float]:
    """Syllables of a voiced tone (a pitch contour, a few harmonics), a gap between words."""
    rng = random.Random(hashlib.sha256(f"speech\x00{seed}".encode()).digest())
    total = max(1, int(SAMPLE_RATE * duration))
    words = re.findall(r"\w+", text) or ["a"]
    syllables = sum(max(1, len(w) // 3) for w in words)
    unit = total / (syllables + 0.5 * len(words))  # samples per syllable, with half a syllable's gap per word
    pitch = rng.uniform(100, 220)
    out: list[float] = []
    for word in words:
        for _ in range(max(1, len(word) // 3)):
            n = int(unit)
            f0 = pitch * rng.uniform(0.9, 1.15)
            out.extend(
                0.25
                * math.sin(math.pi * i / n)
                * sum(math.sin(2 * math.pi * f0 * k * i / SAMPLE_RATE) / k for k in (1, 2, 3))
                for i in range(n)
            )
        out.extend([0.0] * int(unit / 2))
    return (out + [0.0] * total)[:total]

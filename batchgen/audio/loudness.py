"""Loudness and true peak (ITU-R BS.1770-4 / EBU R128), gain to a target, a true-peak limiter.

Pure functions on float arrays shaped (frames, channels), in [-1, 1]. Needs numpy and
scipy (the `deliver` extra): filters and oversampling are what those libraries are for.

* K-weighting: the two biquads of BS.1770, computed for any sample rate from their
  analogue prototypes (as libebur128 does), so 32 kHz audio is measured exactly as
  48 kHz audio is. Channel weights 1.0 (mono and stereo; surrounds 1.41).
* Integrated loudness: 400 ms blocks every 100 ms, absolute gate -70 LUFS, relative gate
  -10 LU. Loudness range (EBU Tech 3342): 3 s blocks every 100 ms, gated at -70 LUFS and
  -20 LU, the 10th to 95th percentile.
* True peak: 4x oversampling with a polyphase FIR (scipy's Kaiser-windowed design), the
  largest absolute value.
* Limiter: a gain curve that is at every sample at most what keeps that sample's
  oversampled peak under the ceiling, made smooth by a minimum then two moving averages
  (10 ms each way), so it reaches full reduction before a peak and lets go after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import signal
from scipy.ndimage import minimum_filter1d, uniform_filter1d

Audio = Any  # numpy float array, (frames, channels)

ABSOLUTE_GATE = -70.0
RELATIVE_GATE = -10.0
LRA_GATE = -20.0
OVERSAMPLE = 4
BLOCK = 1 << 18  # frames oversampled at a time for the true peak
SILENCE = -math.inf
GATE_SECONDS = 0.4  # one BS.1770 gating block: a shorter clip has no integrated loudness


@dataclass(frozen=True, slots=True)
class Loudness:
    """A measure of a whole file: LUFS, dBTP, LU (-inf for silence)."""

    integrated: float
    true_peak: float
    momentary_max: float
    short_term_max: float
    loudness_range: float

    def as_dict(self) -> dict[str, float | None]:
        def show(x: float) -> float | None:
            return round(x, 2) if math.isfinite(x) else None

        return {
            "integratedLufs": show(self.integrated),
            "truePeakDbtp": show(self.true_peak),
            "momentaryMaxLufs": show(self.momentary_max),
            "shortTermMaxLufs": show(self.short_term_max),
            "loudnessRangeLu": show(self.loudness_range),
        }


def k_filter(rate: int) -> Any:
    """The K-weighting filter as second-order sections for `rate` (pre-filter, then RLB high-pass)."""
    f0, gain, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    shelf += [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def _weights(channels: int) -> Any:
    """BS.1770 channel weights: 1.0, and 1.41 for the surrounds of a 5.1 layout (LFE left out)."""
    if channels == 6:
        return np.array([1.0, 1.0, 1.0, 0.0, 1.41, 1.41])
    return np.ones(channels)


def _energies(x: Audio, rate: int) -> Any:
    """Weighted mean-square energy of each 100 ms step of the K-filtered signal."""
    weighted = signal.sosfilt(k_filter(rate), x, axis=0)
    step = rate // 10
    steps = len(weighted) // step
    if steps == 0:
        return np.zeros(0)
    squares = (weighted[: steps * step] ** 2).reshape(steps, step, -1).mean(axis=1)
    return squares @ _weights(x.shape[1])


def _blocks(energies: Any, width: int) -> Any:
    """Energies of blocks `width` steps long, one per step (400 ms: 4, 3 s: 30)."""
    if len(energies) < width:
        return np.zeros(0)
    return np.convolve(energies, np.ones(width) / width, mode="valid")


def _lufs(energy: Any) -> Any:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(energy)


def integrated(energies: Any) -> float:
    """Gated integrated loudness (LUFS) from the 100 ms step energies."""
    blocks = _blocks(energies, 4)
    kept = blocks[_lufs(blocks) > ABSOLUTE_GATE]
    if len(kept) == 0:
        return SILENCE
    kept = kept[_lufs(kept) > _lufs(kept.mean()) + RELATIVE_GATE]
    return float(_lufs(kept.mean())) if len(kept) else SILENCE


def loudness_range(energies: Any) -> float:
    """EBU Tech 3342 loudness range (LU) from the 100 ms step energies."""
    blocks = _blocks(energies, 30)
    kept = blocks[_lufs(blocks) > ABSOLUTE_GATE]
    if len(kept) == 0:
        return 0.0
    kept = kept[_lufs(kept) > _lufs(kept.mean()) + LRA_GATE]
    if len(kept) == 0:
        return 0.0
    low, high = np.percentile(_lufs(kept), [10, 95])
    return float(high - low)


def _peaks(x: Audio) -> Any:
    """Per frame, the largest absolute value of the 4x oversampled signal around it (all channels)."""
    taps = 48  # the polyphase filter's reach either side, in input frames, is well within this
    out = np.empty(len(x))
    for start in range(0, len(x), BLOCK):
        lo, hi = max(0, start - taps), min(len(x), start + BLOCK + taps)
        up = np.abs(signal.resample_poly(x[lo:hi], OVERSAMPLE, 1, axis=0)).reshape(hi - lo, -1)
        per_frame = _column_max(up)
        out[start : min(len(x), start + BLOCK)] = per_frame[start - lo : start - lo + min(BLOCK, len(x) - start)]
    return np.maximum(out, _column_max(np.abs(x)))


def _column_max(a: Any) -> Any:
    """Row maxima of a narrow array, one vector operation per column (a reduction along a short
    axis is ten times slower in numpy)."""
    out = a[:, 0].copy()
    for column in range(1, a.shape[1]):
        np.maximum(out, a[:, column], out=out)
    return out


def true_peak(x: Audio, *, loop: bool = False) -> float:
    """True peak in dBTP (4x oversampled); a loop's across its seam too."""
    if len(x) == 0:
        return SILENCE
    peak = float(_peaks(wrapped(x, 64) if loop else x).max())
    return 20 * math.log10(peak) if peak > 0 else SILENCE


def integrated_loudness(x: Audio, rate: int) -> float:
    """Integrated loudness (LUFS) alone: the gated K-weighted level."""
    return integrated(_energies(x, rate))


def measure(x: Audio, rate: int) -> Loudness:
    """Integrated loudness, true peak, momentary and short-term maxima and loudness range."""
    energies = _energies(x, rate)
    momentary, short = _blocks(energies, 4), _blocks(energies, 30)
    return Loudness(
        integrated=integrated(energies),
        true_peak=true_peak(x),
        momentary_max=float(_lufs(momentary.max())) if len(momentary) else SILENCE,
        short_term_max=float(_lufs(short.max())) if len(short) else SILENCE,
        loudness_range=loudness_range(energies),
    )


def clip_loudness(x: Audio, rate: int) -> float:
    """The loudness of a clip too short for a gating block: the K-weighted level of all of it, ungated.

    BS.1770's integrated loudness needs one 400 ms block at least; a shorter clip is
    measured as one block as long as itself (its momentary loudness over its own length).
    """
    if len(x) == 0:
        return SILENCE
    weighted = signal.sosfilt(k_filter(rate), x, axis=0)
    energy = float((weighted**2).mean(axis=0) @ _weights(x.shape[1]))
    return float(_lufs(energy)) if energy > 0 else SILENCE


def wrapped(x: Audio, pad: int) -> Audio:
    """A loop with `pad` frames of its end before it and of its start after it: the circle, unrolled."""
    return np.take(x, np.arange(-pad, len(x) + pad), axis=0, mode="wrap")


def loop_pad(rate: int) -> int:
    """Frames of context either side of a loop's seam: beyond the limiter's and the filters' reach."""
    return max(1, round(0.1 * rate))


def limit(x: Audio, rate: int, ceiling_db: float, *, loop: bool = False) -> Audio:
    """`x` with every oversampled peak brought under `ceiling_db` dBTP by a smooth gain curve.

    A loop is limited as the circle it is: the end's peaks reach into the start and back,
    so the gain is the same either side of the seam and levelling adds no click there.
    """
    if loop:
        pad = loop_pad(rate)
        return limit(wrapped(x, pad), rate, ceiling_db)[pad : pad + len(x)]
    ceiling = 10 ** (ceiling_db / 20)
    peaks = _peaks(x)
    if peaks.max(initial=0.0) <= ceiling:
        return x
    need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    reach = max(1, round(0.005 * rate))  # 5 ms: each moving average spans 2 x reach + 1 frames
    gain = minimum_filter1d(need, size=4 * reach + 1, mode="nearest")
    gain = uniform_filter1d(uniform_filter1d(gain, size=2 * reach + 1, mode="nearest"), size=2 * reach + 1)
    return x * gain[:, None]


def level_of(x: Audio, rate: int) -> tuple[float, str]:
    """The measure a file is levelled and judged by: integrated loudness, or a short clip's own."""
    if len(x) < GATE_SECONDS * rate:
        return clip_loudness(x, rate), "clip"
    return integrated(_energies(x, rate)), "integrated"


def normalize(
    x: Audio, rate: int, target: float | None, ceiling_db: float | None, *, loop: bool = False
) -> tuple[Audio, float]:
    """`x` at `target` LUFS (None: as it is) with true peaks at or under `ceiling_db` (None: no limit).

    Gain first, then the limiter; what the limiter takes off is made up and limited again
    (three rounds at most), so a dense track still lands on the target. Levelled by
    `level_of`'s measure. Returns the audio and the gain applied before limiting, in dB.
    """
    gain_db = 0.0
    if target is not None:
        now, _ = level_of(x, rate)
        if not math.isfinite(now):
            return x, 0.0  # silence stays silence: no gain can make it loud
        gain_db = target - now
    out = x * 10 ** (gain_db / 20)
    if ceiling_db is None:
        return out, gain_db
    out = limit(out, rate, ceiling_db - 0.05, loop=loop)  # a little headroom for the final quantization
    for _ in range(3):
        if target is None:
            break
        short = target - level_of(out, rate)[0]
        if short < 0.05:
            break
        gain_db += short
        out = limit(x * 10 ** (gain_db / 20), rate, ceiling_db - 0.05, loop=loop)
    return out, gain_db


def resample(x: Audio, rate: int, to: int, *, loop: bool = False) -> Audio:
    """`x` at `to` Hz: polyphase resampling with scipy's anti-aliasing FIR.

    A loop is resampled as a circle (its end filters into its start), so the seam stays
    as continuous as the rest; it comes out ceil(frames x to / rate) frames long.
    """
    if rate == to:
        return x
    g = math.gcd(rate, to)
    up, down = to // g, rate // g
    if not loop:
        return signal.resample_poly(x, up, down, axis=0)
    steps = math.ceil(loop_pad(rate) / down)  # whole input periods, so the cut lands on output frames
    out = signal.resample_poly(wrapped(x, steps * down), up, down, axis=0)
    return out[steps * up : steps * up + math.ceil(len(x) * up / down)]


__all__ = [
    "Loudness",
    "clip_loudness",
    "integrated_loudness",
    "k_filter",
    "level_of",
    "limit",
    "measure",
    "normalize",
    "resample",
    "true_peak",
    "wrapped",
]

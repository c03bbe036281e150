"""Long tracks and loops, as plans: how many hops a length needs, what each asks for, its seed.

A MusicGen job makes at most 30 s. A longer track is a chain: hop 1 is an ordinary job,
hop k continues hop k-1's output from its last `context` seconds (the way audiocraft's
windowed continuation works) and adds `duration - context` new seconds. A loop is a
number of bars at a tempo. Pure: the audio side (stitching, closing loops, checking hops
as they land) is `audio.stitch`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from .task import SEED_MAX, HopPlan


@dataclass(frozen=True, slots=True)
class Loop:
    """`loop:` in a manifest: that many bars, whose end crossfades into the start."""

    bpm: float
    bars: int
    beats_per_bar: int = 4

    @property
    def seconds(self) -> float:
        return self.bars * self.beats_per_bar * 60.0 / self.bpm


@dataclass(frozen=True, slots=True)
class ChainSettings:
    """`chain:` in a manifest: seconds of the previous hop given as the prompt, and of each crossfade."""

    context: float = 10.0
    crossfade: float = 0.05


def hop_seed(seed: int, hop: int) -> int:
    """The seed of hop `hop` (1-based): hop 1 keeps the task's, the others are derived from it."""
    if hop == 1:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}\x00hop\x00{hop}".encode()).digest()[:4], "big") & SEED_MAX


def hop_count(duration: float, target: float, settings: ChainSettings) -> int:
    """Jobs of `duration` seconds a chain needs to make `target` seconds.

    `1 + ceil((target - duration) / (duration - context))`: every hop after the first adds
    what follows its prompt region.
    """
    if target <= duration:
        return 1
    return 1 + math.ceil((target - duration) / (duration - settings.context) - 1e-9)


def plan(duration: float, target: float, settings: ChainSettings, seed: int) -> tuple[HopPlan, ...]:
    """The hops that make at least `target` seconds from jobs of `duration` seconds.

    `1 + ceil((target - duration) / (duration - context))` hops; the last asks only for
    what is missing, in whole seconds, with room for the seams' crossfades when it has
    it (they cost length only if the API turns out not to repeat the prompt; see `stitch`).
    """
    if target <= duration:
        return (HopPlan(duration=float(math.ceil(target)), seed=seed),)
    step = duration - settings.context
    hops = hop_count(duration, target, settings)
    out = [HopPlan(duration=duration, seed=seed)]
    made = duration
    for k in range(2, hops + 1):
        missing = target + (hops - 1) * settings.crossfade - made
        new = step if k < hops else min(step, float(math.ceil(missing - 1e-9)))
        previous = out[-1].duration
        out.append(
            HopPlan(
                duration=settings.context + new,
                seed=hop_seed(seed, k),
                continue_from=previous - settings.context,
                context=settings.context,
            )
        )
        made += new
    return tuple(out)

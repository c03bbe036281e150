"""Delivery presets: loudness targets from broadcast and game-audio recommendations, and engines' formats.

Pure data. Each loudness preset names its source; `docs/listening-and-delivery.md`
shows the table. The ASWG-R001 figures describe a title's average loudness over play:
applying them to each file is a convenience for a consistent library, not compliance.
Each engine preset follows what that engine's own documentation recommends for
imported audio, and says so where it documents nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Level:
    """A loudness target and true-peak ceiling, and where they come from."""

    loudness: float  # LUFS (LKFS)
    true_peak: float  # dBTP
    source: str


@dataclass(frozen=True, slots=True)
class Engine:
    """The files an engine imports as they are."""

    fmt: str
    loop_fmt: str | None  # loops in another format, when the engine reads loop points only from it
    sample_rate: int | None  # None: keep the take's
    why: str


LEVELS = {
    "ebu-r128": Level(-23.0, -1.0, "EBU R 128 (2020): programme loudness -23 LUFS, maximum true peak -1 dBTP"),
    "atsc-a85": Level(-24.0, -2.0, "ATSC A/85:2013: dialnorm target -24 LKFS, true peak at most -2 dBTP"),
    "streaming": Level(-14.0, -1.0, "Spotify's and YouTube's playback normalisation, -14 LUFS; -1 dBTP"),
    "apple": Level(-16.0, -1.0, "Apple Music's Sound Check and Apple Podcasts, -16 LKFS; -1 dBTP"),
    "aswg-console": Level(-23.0, -1.0, "ASWG-R001: console and PC titles about -23 LUFS (+/-2), -1 dBTP"),
    "aswg-mobile": Level(-18.0, -1.0, "ASWG-R001: mobile and handheld titles about -18 LUFS (+/-2), -1 dBTP"),
}

ENGINES = {
    "unity": Engine("wav", None, None, "Unity recompresses on import; its manual advises uncompressed sources"),
    "godot": Engine(
        "ogg", "wav", None, "Godot: Ogg Vorbis for music and long sounds; WAV loops import their smpl loop points"
    ),
    "unreal": Engine("wav", None, 48000, "Unreal imports 16-bit PCM WAV and reads its loop region from smpl"),
    "web": Engine("opus", None, 48000, "browsers play Ogg Opus (MDN's codec guide); loops keep LOOPSTART/LOOPLENGTH"),
}

__all__ = ["ENGINES", "LEVELS", "Engine", "Level"]

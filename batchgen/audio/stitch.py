"""Long tracks and seamless loops as audio: hops checked as they land, stitched; loops closed.

The plan (how many hops, what each asks for) is `core.chain`. Here each hop is checked
as it lands (`check_hop`), then the hops are stitched and loops closed by a crossfade,
streaming WAV files block by block, copying bytes where nothing changes and decoding
only the seams, so a track is never in memory, let alone twice.

Whether a continuation's output repeats its prompt region is not something public
sources settle for Scenario, so it is measured: the start of each hop is compared with
the prompt it was given (normalised cross-correlation), the region is dropped only when
it matches, and the sidecar says which case was seen at every seam.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..core.chain import Loop
from ..core.state import TaskState
from ..core.task import Task
from ..store import files
from ..store.layout import Layout
from . import wavfile
from .wavfile import WavInfo

MATCH = 0.5  # normalised cross-correlation above which a hop's start is its prompt, repeated
PROBE_RATE = 4000  # the prompt comparison runs on a mono copy at about this rate
MAX_LAG = 0.01  # seconds either way the comparison looks for the prompt
PROBE_SECONDS = 3.0  # of the prompt region compared with the hop's start
BLOCK = 65536  # frames copied at a time
# How far a hop's length may be from what was asked and still be kept as it is. MusicGen
# makes audio in 20 ms frames and codecs pad their first and last blocks: a quarter of a
# second is far more than either, and far less than any hop a user would accept.
HOP_TOLERANCE = 0.25


class Unusable(ValueError):
    """A hop that landed but cannot be stitched: it does not decode, is in another format
    than hop 1 that cannot be converted, or is shorter than asked."""


@dataclass(frozen=True, slots=True)
class HopFile:
    """A hop's downloaded output and the prompt it was given (None for hop 1)."""

    path: Path
    context: float = 0.0


class _Out:
    """The stitched file being written: a canonical header, then frames up to `limit`."""

    def __init__(self, fh: BinaryIO, info: WavInfo, limit: int) -> None:
        self.fh, self.info, self.limit, self.frames = fh, info, limit, 0
        fh.write(wavfile.header(info, limit))

    def raw(self, data: bytes) -> None:
        room = (self.limit - self.frames) * self.info.frame_bytes
        data = data[:room]
        self.fh.write(data)
        self.frames += len(data) // self.info.frame_bytes

    def copy(self, path: Path, info: WavInfo, start: int, end: int) -> None:
        """Frames [start, end) of a file in the same format, as they are."""
        with path.open("rb") as fh:
            fh.seek(info.data_offset + start * info.frame_bytes)
            left = max(0, end - start) * info.frame_bytes
            while left > 0 and self.frames < self.limit:
                data = fh.read(min(left, BLOCK * info.frame_bytes))
                if not data:
                    break
                left -= len(data)
                self.raw(data)


def _read(path: Path, info: WavInfo, start: int, count: int) -> list[float]:
    out: list[float] = []
    for block in wavfile.frames(path, info, start, count):
        out.extend(block)
    return out


def crossfade(tail: Sequence[float], head: Sequence[float], channels: int) -> list[float]:
    """Crossfade interleaved `tail` (fading out) into `head` (fading in).

    Equal-power (sine/cosine) when the two are unrelated, so the level holds; equal-gain
    (linear) when they are alike (a prompt region repeated, a loop's two downbeats on
    the same chord), where equal-power would swell by up to 3 dB in the middle.
    """
    frames = min(len(tail), len(head)) // channels
    alike = _correlation(tail[: frames * channels], head[: frames * channels]) > MATCH
    out: list[float] = []
    for i in range(frames):
        t = (i + 0.5) / frames
        fade_in, fade_out = (t, 1.0 - t) if alike else (math.sin(t * math.pi / 2), math.cos(t * math.pi / 2))
        base = i * channels
        out.extend(tail[base + c] * fade_out + head[base + c] * fade_in for c in range(channels))
    return out


def _correlation(a: Sequence[float], b: Sequence[float]) -> float:
    energy = math.sqrt(sum(map(operator.mul, a, a)) * sum(map(operator.mul, b, b)))
    return sum(map(operator.mul, a, b)) / energy if energy > 0 else 0.0


def _probe(samples: Sequence[float], channels: int, step: int) -> list[float]:
    """A mono copy at a lower rate: what the prompt comparison looks at."""
    frames = len(samples) // channels
    return [sum(samples[i * channels : i * channels + channels]) / channels for i in range(0, frames, step)]


def similarity(prompt: Sequence[float], start: Sequence[float], channels: int, rate: int) -> float:
    """How much a hop's start looks like the prompt it was given: the best normalised
    cross-correlation within `MAX_LAG` either way (1.0: the same audio, near 0: unrelated).

    Both are compared over at most `PROBE_SECONDS`, on a mono copy at about `PROBE_RATE`;
    a repeat sample for sample (what continuations give) is settled at lag 0.
    """
    step = max(1, rate // PROBE_RATE)
    room = round(PROBE_SECONDS * rate) * channels
    x, y = _probe(prompt[:room], channels, step), _probe(start[:room], channels, step)
    n = min(len(x), len(y))
    if n < 16:
        return 0.0
    x, y = x[:n], y[:n]
    best = _correlation(x, y)
    if best > 0.99:
        return best
    span = max(1, int(MAX_LAG * rate / step))
    for lag in range(-span, span + 1):
        a, b = (x[lag:], y[: n - lag]) if lag >= 0 else (x[: n + lag], y[-lag:])
        best = max(best, _correlation(a, b))
    return best


def stitch(hops: Sequence[HopFile], out: Path, target: float, fade: float) -> dict[str, Any]:
    """Join hop files into `out` (a WAV exactly `target` seconds long, written atomically).

    Hop 1 is kept whole; each later hop drops its prompt region when its start matches
    the prompt (the crossfade then runs over the repeated audio and costs no length),
    and is joined whole otherwise (the crossfade overlaps the two, and is shortened when
    the hops would not otherwise reach `target`). Returns what happened at each seam.
    """
    infos = _same_format([h.path for h in hops])
    first = infos[0]
    rate, channels = first.rate, first.channels
    limit = round(target * rate)
    seams = _seams(hops, infos)
    fades = _fades(infos, seams, limit, max(1, round(fade * rate)))
    part = out.with_name(out.name + ".part")
    with files.create(part) as fh:
        writer = _Out(fh, first, limit)
        xf = fades[0] if fades else 0
        writer.copy(hops[0].path, first, 0, first.frames - xf)
        tail = _read(hops[0].path, first, first.frames - xf, xf)  # held back for the next seam
        for k, seam in enumerate(seams, start=1):
            hop, info, skip, xf = hops[k], infos[k], seam["skip"], fades[k - 1]
            head = _read(hop.path, info, skip - xf if skip else 0, xf)
            seam["at"] = round(writer.frames / rate, 4)
            seam["crossfade"] = round(xf / rate, 4)
            writer.raw(wavfile.encode(crossfade(tail, head, channels), first))
            nxt = fades[k] if k < len(fades) else 0
            writer.copy(hop.path, info, skip if skip else xf, info.frames - nxt)
            tail = _read(hop.path, info, info.frames - nxt, nxt)
        writer.raw(wavfile.encode(tail, first))
        if writer.frames < limit:
            raise wavfile.WavError(f"the hops make {writer.frames / rate:.2f}s, less than the {target:.2f}s asked for")
        fh.flush()
    files.replace(part, out)
    kept = [first.frames] + [info.frames - seam.pop("skip") for info, seam in zip(infos[1:], seams, strict=True)]
    return {"seams": seams, "secondsKept": [round(n / rate, 4) for n in kept], "frames": limit, "rate": rate}


def _same_format(paths: Sequence[Path]) -> list[WavInfo]:
    infos = [wavfile.read_info(path) for path in paths]
    shape = operator.attrgetter("channels", "rate", "bits", "is_float")
    for path, info in zip(paths, infos, strict=True):
        if shape(info) != shape(infos[0]):
            raise wavfile.WavError(f"{path.name} is not in the same audio format as the first hop")
    return infos


def _seams(hops: Sequence[HopFile], infos: Sequence[WavInfo]) -> list[dict[str, Any]]:
    """Per seam: does the hop start with its prompt, repeated? (`skip`: frames to drop)."""
    rate, channels = infos[0].rate, infos[0].channels
    seams = []
    for k in range(1, len(hops)):
        context = min(round(hops[k].context * rate), infos[k - 1].frames, infos[k].frames)
        probe = min(context, round(PROBE_SECONDS * rate))
        prompt = _read(hops[k - 1].path, infos[k - 1], infos[k - 1].frames - context, probe)
        score = similarity(prompt, _read(hops[k].path, infos[k], 0, probe), channels, rate)
        seams.append(
            {
                "hop": k + 1,
                "promptRepeated": score >= MATCH,
                "similarity": round(score, 3),
                "skip": context * (score >= MATCH),
            }
        )
    return seams


def _fades(infos: Sequence[WavInfo], seams: Sequence[dict[str, Any]], limit: int, xf: int) -> list[int]:
    """Crossfade frames per seam: `xf`, and shorter where hops joined whole must overlap less
    to reach `limit` (only when the API did not repeat the prompt and the last hop had no room)."""
    whole = [s for s in seams if not s["skip"]]
    spare = infos[0].frames + sum(i.frames - s["skip"] for i, s in zip(infos[1:], seams, strict=True)) - limit
    most = min(xf, spare // len(whole)) if whole else xf
    fades = [min(xf, most) if not s["skip"] else xf for s in seams]
    shortest = min((i.frames for i in infos), default=0)
    return [max(1, min(f, shortest // 2)) if f > 0 else 0 for f in fades]


def close_loop(src: Path, out: Path, loop: Loop, fade: float) -> dict[str, Any]:
    """Cut `src` to exactly `loop` (in frames) and crossfade what follows the cut into the start.

    Played end to start, the last frame then runs into audio that continued it in the
    original: the wrap is as smooth as the inside of the track.
    """
    info = wavfile.read_info(src)
    frames, xf = round(loop.seconds * info.rate), max(1, round(fade * info.rate))
    if info.frames < frames + xf:
        raise wavfile.WavError(f"{src.name} holds {info.seconds:.2f}s, less than the loop and its crossfade")
    head = _read(src, info, 0, xf)
    after = _read(src, info, frames, xf)  # what followed the loop's end in the generated audio
    part = out.with_name(out.name + ".part")
    with files.create(part) as fh:
        writer = _Out(fh, info, frames)
        writer.raw(wavfile.encode(crossfade(after, head, info.channels), info))
        writer.copy(src, info, xf, frames)
        fh.flush()
    files.replace(part, out)
    return {"frames": frames, "seconds": round(frames / info.rate, 6), "bpm": loop.bpm, "bars": loop.bars}


def wrap_smoothness(path: Path, loop: Loop, window: float = 0.02) -> dict[str, float]:
    """How smooth a loop's wrap (last frame into first) is, against the track's own bar lines.

    A loop is cut on a bar line, so its wrap is a bar line too: played round, it should
    step in level no more than the loop's bar lines inside do, and join sample to sample
    no harder than the track's own sample steps. Returns the RMS step across the wrap and
    the largest across an inside bar line (20 ms windows either side, mono), and the
    sample jump at the wrap with the 99.9th percentile of the jumps inside. (Against all
    windows inside, a wrap on a downbeat would look rough: the beat's onset is there,
    as it is at every bar line.)
    """
    info = wavfile.read_info(path)
    size = max(1, round(window * info.rate))
    mono: list[float] = []
    for block in wavfile.frames(path, info):
        ch = info.channels
        mono.extend(sum(block[i : i + ch]) / ch for i in range(0, len(block) - ch + 1, ch))

    def rms(a: int, b: int) -> float:
        part = mono[max(0, a) : max(0, b)]
        return math.sqrt(sum(x * x for x in part) / len(part)) if part else 0.0

    n = len(mono)
    bar = info.rate * loop.beats_per_bar * 60.0 / loop.bpm
    lines = [round(k * bar) for k in range(1, loop.bars) if size <= round(k * bar) <= n - size]
    bar_steps = [abs(rms(at, at + size) - rms(at - size, at)) for at in lines]
    jumps = sorted(abs(b - a) for a, b in itertools.pairwise(mono))
    return {
        "wrapStep": abs(rms(0, size) - rms(n - size, n)),
        "barStepMax": max(bar_steps, default=0.0),
        "wrapJump": abs(mono[0] - mono[-1]) if mono else 0.0,
        "jumpP999": jumps[int(0.999 * (len(jumps) - 1))] if jumps else 0.0,
    }


def check_hop(path: Path, asked: float, context: float, first: Path | None) -> Path:
    """Check a hop as it lands, before anything is paid for the next one; the WAV to keep.

    It must decode (MP3, FLAC and Ogg through libsndfile, into a WAV beside it) and be
    in hop 1's rate and channel count (`first`, None for hop 1 itself), or be converted
    to hop 1's sample width. Its length must be what was asked, within `HOP_TOLERANCE`: a
    continuation may also answer only its new audio (`asked - context`). A longer hop
    is cut to what was asked, so the next hop, which continues from the asked end,
    joins it without a jump. Raises `Unusable` with the reason otherwise.
    """
    try:
        wav = _as_wav(path)
        info = wavfile.read_info(wav)
    except wavfile.WavError as err:
        raise Unusable(f"does not decode: {err}") from None
    if first is not None:
        want = wavfile.read_info(first)
        if (info.rate, info.channels) != (want.rate, want.channels):
            raise Unusable(
                f"{info.rate} Hz, {info.channels} channel(s); hop 1 is {want.rate} Hz, {want.channels} channel(s)"
            )
        if (info.bits, info.is_float) != (want.bits, want.is_float):
            info = _convert(wav, info, want)
    seconds = info.frames / info.rate
    if any(abs(seconds - length) <= HOP_TOLERANCE for length in {asked, asked - context} if length > 0):
        return wav
    if seconds > asked:
        _cut(wav, info, round(asked * info.rate))
        return wav
    raise Unusable(f"{seconds:.2f} s long, {asked:g} s asked")


def _cut(path: Path, info: WavInfo, frames: int) -> None:
    """Keep the first `frames` of a WAV, atomically."""
    part = path.with_name(path.name + ".part")
    with files.create(part) as fh:
        writer = _Out(fh, info, frames)
        writer.copy(path, info, 0, frames)
        fh.flush()
    files.replace(part, path)


def _convert(path: Path, info: WavInfo, want: WavInfo) -> WavInfo:
    """Rewrite a WAV in another sample width (`want`'s), atomically; the new layout."""
    layout = wavfile.layout(info.channels, info.rate, want.bits, is_float=want.is_float)
    part = path.with_name(path.name + ".part")
    with files.create(part) as fh:
        writer = _Out(fh, layout, info.frames)
        for block in wavfile.frames(path, info):
            writer.raw(wavfile.encode(block, layout))
        fh.flush()
    files.replace(part, path)
    return wavfile.read_info(path)


def make_track(task: Task, st: TaskState, folder: Path) -> dict[str, Any]:
    """The finished file of a long track or loop from its hop files (a `finish.Finisher` hook).

    Returns the file record for the `done` event, with what the sidecar says of the chain:
    every hop's job, asset, seed, the seconds it kept and where its seam is.
    """
    settings = task.chain
    if settings is None or any(h.file is None for h in st.hops):
        raise ValueError(f"{task.name} is not a chain with every hop on disk")  # a caller's mistake, not input
    hop_paths = [_as_wav(folder / h.file["path"]) for h in st.hops if h.file is not None]
    hop_files = [HopFile(path, task.hops[i].context) for i, path in enumerate(hop_paths)]
    final = Layout(folder).audio(task.name)
    report: dict[str, Any] = {"seams": [], "secondsKept": [round(wavfile.read_info(hop_paths[0]).seconds, 4)]}
    if task.loop is not None:
        source = hop_paths[0]
        if len(hop_files) > 1:
            source = hop_paths[0].with_name(f"{task.name}.chain.wav")
            report = stitch(hop_files, source, task.loop.seconds + settings.crossfade, settings.crossfade)
        report["loop"] = close_loop(source, final, task.loop, settings.crossfade)
        report["loop"]["wrap"] = {k: round(v, 5) for k, v in wrap_smoothness(final, task.loop).items()}
    else:
        report = stitch(hop_files, final, float(task.length or 0.0), settings.crossfade)
    size, digest = size_and_sha256(final)
    hops = []
    for i, hop in enumerate(st.hops):
        seam = report["seams"][i - 1] if i else None
        hops.append(
            {
                "hop": i + 1,
                "jobId": hop.job_id,
                "assetId": hop.asset_ids[0] if hop.asset_ids else None,
                "seed": task.hops[i].seed,
                "duration": task.hops[i].duration,
                "secondsKept": report["secondsKept"][i] if i < len(report["secondsKept"]) else None,
                "seamAt": seam["at"] if seam else None,
                "promptRepeated": seam["promptRepeated"] if seam else None,
                "crossfade": seam["crossfade"] if seam else None,
                "similarity": seam["similarity"] if seam else None,
            }
        )
    chain = {"context": settings.context, "crossfade": settings.crossfade, "hops": hops}
    if "loop" in report:
        chain["loop"] = report["loop"]
    return {"path": final.name, "bytes": size, "sha256": digest, "chain": chain}


def size_and_sha256(path: Path) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


def _as_wav(path: Path) -> Path:
    """A hop as a WAV: WAVs as they are, other formats (MP3, FLAC, OGG) decoded with
    `soundfile` (libsndfile) into a WAV beside them, when the `audio` extra is installed."""
    if path.suffix.lower() == ".wav":
        return path
    target = path.with_suffix(".wav")
    try:
        import soundfile
    except ImportError:
        raise wavfile.WavError(
            f"{path.name}: stitching {path.suffix} hops needs libsndfile: pip install 'batchgen[deliver]'"
        ) from None
    part = target.with_name(target.name + ".part")
    try:
        with soundfile.SoundFile(str(path)) as source:
            files.create(part).close()
            with soundfile.SoundFile(
                str(part), "w", source.samplerate, source.channels, "PCM_16", format="WAV"
            ) as sink:
                for block in source.blocks(blocksize=BLOCK):
                    sink.write(block)
    except (RuntimeError, ValueError) as err:  # libsndfile's errors: not audio it can decode
        files.unlink_quietly(part)
        raise wavfile.WavError(f"{path.name}: cannot decode: {' '.join(str(err).split())[:120]}") from None
    files.replace(part, target)
    return target

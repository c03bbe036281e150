"""The listening room: one self-contained HTML page per batch, to audition and compare.

No server, no external assets: the page works from file://, plays the WAVs beside it,
draws each file's waveform as a small inline SVG, and filters and sorts with a few lines
of plain JavaScript. Every string from a manifest is escaped.
"""

from __future__ import annotations

import html
import json
import sys
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import files, wavfile
from .ledger import Ledger
from .manifest import Manifest, expand_as_recorded
from .params import PARAMS
from .state import Status, TaskState
from .task import Task

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


@dataclass(slots=True)
class Entry:
    """One task as the page shows it."""

    task: Task
    status: str
    file: str | None = None
    seconds: float | None = None
    wave: str = ""
    cost: float | None = None
    job_id: str | None = None
    reason: str | None = None
    extra_files: list[str] = field(default_factory=list)


def collect(tasks: Sequence[Task], ledger: Ledger, folder: Path) -> list[Entry]:
    """What the ledger's task states and the folder say."""
    entries = []
    for task in tasks:
        st: TaskState | None = ledger.state(task.name)
        if st is None:
            entries.append(Entry(task, "pending"))
            continue
        entry = Entry(
            task, st.status.value, cost=st.spent or None, job_id=st.job_id or (st.job_ids[-1] if st.job_ids else None)
        )
        if st.status is Status.DONE and st.files:
            entry.file = st.files[0]["path"]
            entry.extra_files = [f["path"] for f in st.files[1:]]
            path = folder / entry.file
            if path.suffix == ".wav" and path.is_file() and not path.is_symlink():
                try:
                    cols, entry.seconds = wav_columns(path)
                    entry.wave = svg_path(cols)
                except (OSError, ValueError):
                    entry.wave = ""
        elif st.status is Status.FAILED:
            entry.reason = st.reason
        elif st.status is not Status.DONE:
            entry.status = "pending"
            entry.reason = "in flight" if st.pending_job else st.reason
        entries.append(entry)
    return entries


def differing(params: Mapping[str, object], point: Mapping[str, object]) -> dict[str, object]:
    """Parameters that differ from the API's defaults (prompt, seed and sweep keys shown elsewhere)."""
    shown = {}
    for key, value in params.items():
        if key in ("prompt", "seed", "modelVersion") or key in point:  # shown on their own
            continue
        default = PARAMS[key].default if key in PARAMS else None
        if value != default:
            shown[key] = value
    return shown


def render(batch: str, entries: Sequence[Entry]) -> str:
    """The whole page."""
    e = html.escape
    tracks: dict[str, list[Entry]] = {}
    for entry in entries:
        tracks.setdefault(entry.task.track, []).append(entry)
    done = sum(1 for x in entries if x.status == "done")
    failed = [x for x in entries if x.status == "failed"]
    pending = [x for x in entries if x.status == "pending"]
    spent = sum(x.cost or 0 for x in entries if x.status == "done")
    problems = "".join(
        f"<li><b>{e(x.task.name)}</b> — {e(x.status)}: {e(x.reason or 'not generated yet')}</li>"
        for x in (*failed, *pending)
    )
    problem_block = f"<section class=problems><h2>Not done</h2><ul>{problems}</ul></section>" if problems else ""
    summary = f"{done} of {len(entries)} done · {len(failed)} failed · {len(pending)} pending · {spent:g} CU"
    return _PAGE.format(
        title=e(batch),
        summary=e(summary),
        problems=problem_block,
        tracks="\n".join(_track_html(name, group) for name, group in tracks.items()),
        count=len(tracks),
    )


def _track_html(name: str, group: Sequence[Entry]) -> str:
    """One track's card: its prompt and parameters, then its takes side by side."""
    e = html.escape
    first = group[0].task
    params = differing(first.params, {k: v for x in group for k, v in x.task.point.items()})
    duration = max((x.seconds or 0.0) for x in group)
    cost = sum(x.cost or 0.0 for x in group)
    chips = "".join(f"<span class=chip>{e(k)}: {e(_fmt(v))}</span>" for k, v in params.items())
    prompt = str(first.params.get("prompt", ""))
    version = str(first.params.get("modelVersion", PARAMS["modelVersion"].default))
    return (
        f'<section class=track data-name="{e(name.lower())}" data-prompt="{e(prompt.lower())}" '
        f'data-duration="{duration:.3f}" data-cost="{cost:g}" tabindex=-1>'
        f"<h2>{e(name)}</h2><p class=prompt>{e(prompt)}</p>"
        f"<p class=params>{e(first.model)} · {e(version)}{chips}</p>"
        f"<div class=takes>{''.join(_take_html(x) for x in group)}</div></section>"
    )


def _take_html(x: Entry) -> str:
    """One take: its label, a waveform and a player, or why it is not there."""
    e = html.escape
    meta = (
        f"seed {x.task.seed}" + (f" · {x.seconds:.1f} s" if x.seconds else "") + (f" · {x.cost:g} CU" if x.cost else "")
    )
    job = f"<div class=job>job {e(x.job_id)}</div>" if x.job_id else ""
    if x.file:
        wave_svg = (
            f'<svg class=wave viewBox="0 0 {COLUMNS} {HEIGHT}" preserveAspectRatio="none" aria-hidden=true>'
            f'<path d="{x.wave}"/></svg>'
            if x.wave
            else ""
        )
        more = "".join(f'<audio controls preload=none src="{e(_href(f))}"></audio>' for f in x.extra_files)
        body = f'{wave_svg}<audio controls preload=metadata src="{e(_href(x.file))}"></audio>{more}'
    else:
        body = f"<p class=why>{e(x.status)}: {e(x.reason or 'not generated yet')}</p>"
    return (
        f'<figure class="take {e(x.status)}"><figcaption><b>{e(_label(x))}</b> <small>{e(meta)}</small>'
        f"</figcaption>{body}{job}</figure>"
    )


def build(manifest: Manifest, out: Path) -> Path:
    """Write the batch's page from its manifest, journal and files; returns its path."""
    folder = out / manifest.batch
    ledger = Ledger.read(folder, manifest.batch)
    tasks = expand_as_recorded(manifest, ledger.base_seed)
    return write(folder, manifest.batch, collect(tasks, ledger, folder))


def write(folder: Path, batch: str, entries: Sequence[Entry]) -> Path:
    """Write `index.html` atomically into the batch folder (never through a symlink)."""
    target = folder / "index.html"
    files.ensure_dir(folder)
    files.write_atomic(target, render(batch, entries).encode("utf-8"), durable=False)
    return target


def _label(entry: Entry) -> str:
    bits = [f"take {entry.task.take}"]
    bits += [f"{k} {_fmt(v)}" for k, v in entry.task.point.items()]
    return " · ".join(bits)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if not isinstance(value, dict | list) else json.dumps(value)


def _href(path: str) -> str:
    from urllib.parse import quote

    return quote(path)


_PAGE = """<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>{title} — batchgen</title>
<style>
:root {{ color-scheme: light dark; --bg: #fafafa; --fg: #1d1d1f; --muted: #6e6e73; --card: #fff;
  --line: #d2d2d7; --accent: #0a66c2; --wave: #0a66c2; --bad: #b42318; }}
@media (prefers-color-scheme: dark) {{ :root {{ --bg: #141416; --fg: #f2f2f7; --muted: #a1a1a6; --card: #1f1f23;
  --line: #3a3a3f; --accent: #64a8ff; --wave: #64a8ff; --bad: #ff6b5b; }} }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }}
header {{ position: sticky; top: 0; z-index: 1; background: var(--bg); border-bottom: 1px solid var(--line);
  padding: 12px 24px; display: flex; flex-wrap: wrap; gap: 12px 24px; align-items: center; }}
h1 {{ font-size: 20px; margin: 0; }}
.summary {{ color: var(--muted); }}
.controls {{ display: flex; gap: 12px; margin-left: auto; align-items: center; }}
input, select {{ font: inherit; padding: 6px 10px; border: 1px solid var(--line); border-radius: 8px;
  background: var(--card); color: var(--fg); }}
input:focus, select:focus, audio:focus, section:focus {{ outline: 2px solid var(--accent); outline-offset: 2px; }}
main {{ padding: 16px 24px 48px; display: grid; gap: 16px; }}
section.track, section.problems {{ background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 14px 18px; }}
h2 {{ font-size: 17px; margin: 0 0 2px; }}
.prompt {{ margin: 0 0 4px; }}
.params {{ margin: 0 0 10px; color: var(--muted); font-size: 13px; }}
.chip {{ display: inline-block; margin-left: 8px; padding: 0 8px; border: 1px solid var(--line); border-radius: 999px; }}
.takes {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }}
figure {{ margin: 0; padding: 10px; border: 1px solid var(--line); border-radius: 10px; }}
figcaption small, .job {{ color: var(--muted); font-size: 12px; }}
.wave {{ display: block; width: 100%; height: 48px; margin: 6px 0; }}
.wave path {{ stroke: var(--wave); stroke-width: 1; fill: none; vector-effect: non-scaling-stroke; }}
audio {{ width: 100%; }}
.failed .why, .problems li {{ color: var(--bad); }}
.hidden {{ display: none; }}
</style>
</head>
<body>
<header>
<h1>{title}</h1>
<span class=summary>{summary}</span>
<div class=controls>
<label>Filter <input id=filter type=search placeholder="track or prompt" autocomplete=off></label>
<label>Sort <select id=sort><option value=name>name</option><option value=duration>duration</option>
<option value=cost>cost</option></select></label>
</div>
</header>
<main id=tracks>
{problems}
{tracks}
</main>
<script>
(function () {{
  var main = document.getElementById("tracks");
  var filter = document.getElementById("filter");
  var sort = document.getElementById("sort");
  var tracks = Array.prototype.slice.call(document.querySelectorAll("section.track"));
  filter.addEventListener("input", function () {{
    var q = filter.value.trim().toLowerCase();
    tracks.forEach(function (t) {{
      var hit = !q || t.dataset.name.indexOf(q) >= 0 || t.dataset.prompt.indexOf(q) >= 0;
      t.classList.toggle("hidden", !hit);
    }});
  }});
  sort.addEventListener("change", function () {{
    var key = sort.value;
    tracks.sort(function (a, b) {{
      if (key === "name") return a.dataset.name.localeCompare(b.dataset.name);
      return parseFloat(b.dataset[key]) - parseFloat(a.dataset[key]);
    }});
    tracks.forEach(function (t) {{ main.appendChild(t); }});
  }});
  document.addEventListener("keydown", function (ev) {{
    if (ev.key === "/" && document.activeElement !== filter) {{ ev.preventDefault(); filter.focus(); }}
  }});
}})();
</script>
</body>
</html>
"""

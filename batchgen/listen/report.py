"""The listening room: one self-contained HTML page per batch, to audition and compare.

No server, no external assets: the page works from file://, plays the WAVs beside it,
draws each file's waveform as a small inline SVG, and filters and sorts with a few lines
of plain JavaScript. Every string from a manifest is escaped.
"""

from __future__ import annotations

import html
import json
import stat
import sys
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audio import wavfile
from ..core import text
from ..core.errors import BatchgenError
from ..core.params import PARAMS
from ..core.state import Status, TaskState
from ..core.task import Task
from ..manifest.parse import Manifest, expand_as_recorded
from ..store import files
from ..store.ledger import Ledger
from .picks import MAX_NOTE, Made, Mark, Picks, PicksError, reconcile
from .picks import load as load_picks

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
    seams: tuple[float, ...] = ()  # seconds into the file where a chained track's hops join
    made: Made | None = None  # what a pick is checked against (done takes)


Waves = dict[tuple[str, int, int], tuple[str, float]]  # (file, size, mtime) -> (svg path, seconds)


REASONS = {
    "changed": "changed in the manifest since it was made: the next run makes it again",
    "missing": "its file is missing or cut short: the next run fetches it again (no charge)",
}


def collect(tasks: Sequence[Task], ledger: Ledger, folder: Path, waves: Waves | None = None) -> list[Entry]:
    """What the ledger's task states and the folder say; `waves` caches drawn waveforms."""
    entries = []
    present = ledger.files_present()
    for task in tasks:
        st: TaskState | None = ledger.state(task.name)
        if st is None:
            entries.append(Entry(task, "pending"))
            continue
        entry = Entry(
            task, st.status.value, cost=st.spent or None, job_id=st.job_id or (st.job_ids[-1] if st.job_ids else None)
        )
        # The plan, as `plan` and `status` show it, not the raw state: a take whose manifest
        # entry changed since, or whose file is gone, is not done whatever the journal says.
        planned = ledger.plan(task, present)
        if planned in ("changed", "missing"):
            entry.status = "pending"
            entry.reason = REASONS[planned]
        elif st.status is Status.DONE and st.files:
            entry.file = st.files[0]["path"]
            entry.extra_files = [f["path"] for f in st.files[1:]]
            entry.made = Made(task.track, st.done_digest or "", str(st.files[0].get("sha256", "")))
            entry.wave, entry.seconds = _wave(folder / entry.file, {} if waves is None else waves)
            if task.shaped:
                entry.seams = _seams(folder, st, entry.seconds or 0.0)
        elif st.status is Status.FAILED:
            entry.reason = st.reason
        elif st.status is not Status.DONE:
            entry.status = "pending"
            entry.reason = "in flight" if st.pending_job else st.reason
        entries.append(entry)
    return entries


def _wave(path: Path, waves: Waves) -> tuple[str, float | None]:
    """A WAV's waveform as an SVG path, and its seconds; drawn once per version of the file."""
    if path.suffix != ".wav":
        return "", None
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            return "", None
        key = (str(path), info.st_size, info.st_mtime_ns)
        if key not in waves:
            cols, seconds = wav_columns(path)
            waves[key] = (svg_path(cols), seconds)
        return waves[key]
    except (OSError, ValueError):
        return "", None


def _seams(folder: Path, st: TaskState, seconds: float) -> tuple[float, ...]:
    """Where a chained track's hops join, from its sidecar (which may have been edited: checked)."""
    if st.sidecar is None:
        return ()
    try:
        data = files.read_regular(folder / st.sidecar["path"], 8 * 1024 * 1024)
        hops = text.loads(data or b"{}").get("chain", {}).get("hops", [])
        seams = [h.get("seamAt") for h in hops if isinstance(h, dict)]
    except (BatchgenError, OSError, ValueError, AttributeError, TypeError, RecursionError):
        return ()
    return tuple(float(x) for x in seams if isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < seconds)


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


@dataclass(frozen=True, slots=True)
class Live:
    """What makes the page live (`batchgen serve`): the token its write actions carry, and the revision it shows."""

    token: str
    rev: int = 0


def render(batch: str, entries: Sequence[Entry], picks: Picks | None = None, live: Live | None = None) -> str:
    """The whole page; with `picks`, each take's mark (read-only unless `live`)."""
    e = html.escape
    tracks: dict[str, list[Entry]] = {}
    for entry in entries:
        tracks.setdefault(entry.task.track, []).append(entry)
    marks = picks.marks if picks is not None else {}
    meta = ""
    if live is not None:
        meta = f'<meta name=batchgen-token content="{e(live.token)}"><meta name=batchgen-rev content="{live.rev}">'
    return _PAGE.format(
        title=e(batch),
        live_meta=meta,
        summary=e(summary(entries)),
        problems=problems(entries),
        tracks="\n".join(_track_html(name, group, marks, live is not None) for name, group in tracks.items()),
        hint=_HINT_LIVE if live else _HINT,
        script=_SCRIPT,
    )


def summary(entries: Sequence[Entry]) -> str:
    """The line at the top: how many takes are done, failed, pending, and what they cost."""
    counts = Counter(x.status for x in entries)
    spent = sum(x.cost or 0 for x in entries if x.status == "done")
    return (
        f"{counts['done']} of {len(entries)} done · {counts['failed']} failed · {counts['pending']} pending · "
        f"{spent:g} CU"
    )


def problems(entries: Sequence[Entry]) -> str:
    """The "Not done" list: every failed or pending take and why (empty when all are done)."""
    e = html.escape
    items = "".join(
        f"<li><b>{e(x.task.name)}</b> — {e(x.status)}: {e(x.reason or 'not generated yet')}</li>"
        for x in entries
        if x.status in ("failed", "pending")
    )
    return f"<section class=problems id=problems><h2>Not done</h2><ul>{items}</ul></section>" if items else ""


def _track_html(name: str, group: Sequence[Entry], marks: Mapping[str, Mark], live: bool) -> str:
    """One track's card: its prompt and parameters, then its takes side by side."""
    e = html.escape
    first = group[0].task
    params = differing(first.params, {k: v for x in group for k, v in x.task.point.items()})
    if first.length is not None:
        params = {**params, "length": first.length}
    if first.loop is not None:
        params = {**params, "loop": f"{first.loop.bars} bars at {first.loop.bpm:g} bpm"}
    duration = max((x.seconds or 0.0) for x in group)
    cost = sum(x.cost or 0.0 for x in group)
    chips = "".join(f"<span class=chip>{e(k)}: {e(_fmt(v))}</span>" for k, v in params.items())
    prompt = str(first.params.get("prompt", ""))
    version = str(first.params.get("modelVersion", PARAMS["modelVersion"].default))
    takes = "".join(take_html(x, marks.get(x.task.name), live) for x in group)
    return (
        f'<section class=track data-track="{e(name)}" data-name="{e(name.lower())}" '
        f'data-prompt="{e(prompt.lower())}" data-duration="{duration:.3f}" data-cost="{cost:g}">'
        f"<h2>{e(name)}</h2><p class=prompt>{e(prompt)}</p>"
        f"<p class=params>{e(first.model)} · {e(version)}{chips}</p>"
        f"<div class=takes>{takes}</div></section>"
    )


def take_html(x: Entry, mark: Mark | None = None, live: bool = False) -> str:
    """One take: its label, a waveform with its seams, a player, its mark; or why it is not there."""
    e = html.escape
    meta = (
        f"seed {x.task.seed}" + (f" · {x.seconds:.1f} s" if x.seconds else "") + (f" · {x.cost:g} CU" if x.cost else "")
    )
    if x.seams:
        meta += f" · {len(x.seams) + 1} hops"
    job = f"<div class=job>job {e(x.job_id)}</div>" if x.job_id else ""
    if x.file:
        more = "".join(f'<audio controls preload=none src="{e(_href(f))}"></audio>' for f in x.extra_files)
        body = f'{_wave_svg(x)}<audio controls preload=metadata src="{e(_href(x.file))}"></audio>{more}'
        if x.task.loop is not None:
            body += (
                "<div class=looping><label><input type=checkbox class=loop> loop</label> "
                "<button type=button class=wrap>hear the wrap</button></div>"
            )
    else:
        body = f"<p class=why>{e(x.status)}: {e(x.reason or 'not generated yet')}</p>"
    state = mark.state if mark else None
    note = mark.note if mark else ""
    if live:
        actions = (
            "<div class=actions><button type=button data-act=pick>pick <kbd>p</kbd></button>"
            "<button type=button data-act=reject>reject <kbd>x</kbd></button></div>"
            if x.file
            else ""
        )
        tail = f'{actions}<textarea class=note rows=1 maxlength={MAX_NOTE} placeholder="note">{e(note)}</textarea>'
    else:
        tail = f"<p class=note>{e(note)}</p>" if note else ""
    classes = " ".join(filter(None, ("take", x.status, state)))
    return (
        f'<figure class="{e(classes)}" data-take="{e(x.task.name)}" tabindex=0>'
        f"<figcaption><b>{e(_label(x))}</b> <small>{e(meta)}</small> <span class=badge></span></figcaption>"
        f"{body}{job}{tail}</figure>"
    )


def _wave_svg(x: Entry) -> str:
    """The waveform, with a mark at every seam of a chained track; a click on it seeks there."""
    if not x.wave:
        return ""
    seams = ""
    if x.seams and x.seconds:
        seams = '<path class=seam d="' + "".join(f"M{s / x.seconds * COLUMNS:.1f} 0v{HEIGHT}" for s in x.seams) + '"/>'
    return (
        f'<svg class=wave viewBox="0 0 {COLUMNS} {HEIGHT}" preserveAspectRatio="none" aria-hidden=true>'
        f'<path d="{x.wave}"/>{seams}</svg>'
    )


def build(manifest: Manifest, out: Path) -> Path:
    """Write the batch's page from its manifest, journal and files; returns its path."""
    folder = out / manifest.batch
    ledger = Ledger.read(folder, manifest.batch)
    tasks = expand_as_recorded(manifest, ledger.base_seed)
    return write(folder, manifest.batch, collect(tasks, ledger, folder))


def write(folder: Path, batch: str, entries: Sequence[Entry]) -> Path:
    """Write `index.html` atomically into the batch folder (never through a symlink).

    The picks made in `batchgen serve` are shown read-only; a pick whose take was made
    again since is not (a bad picks.json only costs the page its marks).
    """
    target = folder / "index.html"
    files.ensure_dir(folder)
    try:
        picks: Picks | None = load_picks(folder, batch)
    except PicksError:
        picks = None
    if picks is not None:
        reconcile(picks, {x.task.name: x.made for x in entries if x.made is not None})
    files.write_atomic(target, render(batch, entries, picks).encode("utf-8"), durable=False)
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


_HINT = "space plays, arrows move, / filters"
_HINT_LIVE = "space plays, arrows move, p picks, x rejects, / filters"

_PAGE = """<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
{live_meta}
<title>{title} — batchgen</title>
<style>
:root {{ color-scheme: light dark; --bg: #fafafa; --fg: #1d1d1f; --muted: #6e6e73; --card: #fff;
  --line: #d2d2d7; --accent: #0a66c2; --wave: #0a66c2; --bad: #b42318; --good: #1a7f37; --seam: #c4661f; }}
@media (prefers-color-scheme: dark) {{ :root {{ --bg: #141416; --fg: #f2f2f7; --muted: #a1a1a6; --card: #1f1f23;
  --line: #3a3a3f; --accent: #64a8ff; --wave: #64a8ff; --bad: #ff6b5b; --good: #4ac26b; --seam: #ffa657; }} }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }}
header {{ position: sticky; top: 0; z-index: 1; background: var(--bg); border-bottom: 1px solid var(--line);
  padding: 12px 24px; display: flex; flex-wrap: wrap; gap: 12px 24px; align-items: center; }}
h1 {{ font-size: 20px; margin: 0; }}
.summary, .hint {{ color: var(--muted); }}
.hint {{ font-size: 12px; }}
.controls {{ display: flex; gap: 12px; margin-left: auto; align-items: center; }}
input, select, textarea, button {{ font: inherit; padding: 6px 10px; border: 1px solid var(--line); border-radius: 8px;
  background: var(--card); color: var(--fg); }}
button {{ padding: 2px 10px; cursor: pointer; }}
input:focus, select:focus, audio:focus, textarea:focus, figure:focus {{ outline: 2px solid var(--accent); outline-offset: 2px; }}
main {{ padding: 16px 24px 48px; display: grid; gap: 16px; }}
section.track, section.problems {{ background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 14px 18px; }}
h2 {{ font-size: 17px; margin: 0 0 2px; }}
.prompt {{ margin: 0 0 4px; }}
.params {{ margin: 0 0 10px; color: var(--muted); font-size: 13px; }}
.chip {{ display: inline-block; margin-left: 8px; padding: 0 8px; border: 1px solid var(--line); border-radius: 999px; }}
.takes {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }}
figure {{ margin: 0; padding: 10px; border: 1px solid var(--line); border-radius: 10px; }}
figure.picked {{ border: 2px solid var(--good); }}
figure.rejected {{ opacity: 0.55; }}
.picked .badge::before {{ content: "★ picked"; color: var(--good); font-weight: 600; }}
.picked [data-act=pick] {{ background: var(--good); border-color: var(--good); color: #fff; }}
.rejected [data-act=reject] {{ background: var(--bad); border-color: var(--bad); color: #fff; }}
.rejected .badge::before {{ content: "✕ rejected"; color: var(--bad); }}
figcaption small, .job {{ color: var(--muted); font-size: 12px; }}
.wave {{ display: block; width: 100%; height: 48px; margin: 6px 0; cursor: pointer; }}
.wave path {{ stroke: var(--wave); stroke-width: 1; fill: none; vector-effect: non-scaling-stroke; }}
.wave path.seam {{ stroke: var(--seam); stroke-width: 2; stroke-dasharray: 3 2; }}
audio {{ width: 100%; }}
.looping, .actions {{ display: flex; gap: 8px; align-items: center; margin-top: 6px; font-size: 13px; }}
textarea.note {{ width: 100%; margin-top: 6px; resize: vertical; font-size: 13px; }}
p.note {{ margin: 6px 0 0; font-size: 13px; font-style: italic; }}
.failed .why, .problems li {{ color: var(--bad); }}
.hidden {{ display: none; }}
</style>
</head>
<body>
<header>
<h1>{title}</h1>
<span class=summary id=summary>{summary}</span>
<span class=hint>{hint}</span>
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
{script}
</script>
</body>
</html>
"""

# The page's behaviour, the same from file:// and from `batchgen serve`. With a token in
# the page (serve), it also sends marks and follows the batch by polling api/state.
_SCRIPT = """(function () {
  "use strict";
  var main = document.getElementById("tracks");
  var filter = document.getElementById("filter");
  var sort = document.getElementById("sort");
  var tokenTag = document.querySelector("meta[name=batchgen-token]");
  var token = tokenTag ? tokenTag.content : null;
  var rev = token ? parseInt(document.querySelector("meta[name=batchgen-rev]").content, 10) : 0;
  function tracks() { return Array.prototype.slice.call(main.querySelectorAll("section.track")); }
  function visibleTakes() {
    return Array.prototype.slice.call(main.querySelectorAll("section.track:not(.hidden) figure.take"));
  }
  function figureOf(node) { return node && node.closest ? node.closest("figure.take") : null; }
  function applyFilter() {
    var q = filter.value.trim().toLowerCase();
    tracks().forEach(function (t) {
      var hit = !q || t.dataset.name.indexOf(q) >= 0 || t.dataset.prompt.indexOf(q) >= 0;
      t.classList.toggle("hidden", !hit);
    });
  }
  filter.addEventListener("input", applyFilter);
  sort.addEventListener("change", function () {
    var key = sort.value;
    tracks().sort(function (a, b) {
      if (key === "name") return a.dataset.name.localeCompare(b.dataset.name);
      return parseFloat(b.dataset[key]) - parseFloat(a.dataset[key]);
    }).forEach(function (t) { main.appendChild(t); });
  });
  document.addEventListener("play", function (ev) {
    document.querySelectorAll("audio").forEach(function (a) { if (a !== ev.target) a.pause(); });
  }, true);
  main.addEventListener("click", function (ev) {
    var fig = figureOf(ev.target);
    if (!fig) return;
    var audio = fig.querySelector("audio");
    var wave = ev.target.closest(".wave");
    if (wave && audio && audio.duration) {
      var box = wave.getBoundingClientRect();
      audio.currentTime = Math.max(0, (ev.clientX - box.left) / box.width * audio.duration);
      audio.play();
    }
    if (ev.target.closest("button.wrap") && audio) {
      fig.querySelector("input.loop").checked = audio.loop = true;
      var seek = function () { audio.currentTime = Math.max(0, audio.duration - 2); audio.play(); };
      if (audio.readyState >= 1) seek(); else { audio.addEventListener("loadedmetadata", seek, {once: true}); audio.load(); }
    }
    var act = ev.target.closest("button[data-act]");
    if (act) send(fig, act.dataset.act);
  });
  main.addEventListener("change", function (ev) {
    var fig = figureOf(ev.target);
    if (!fig) return;
    if (ev.target.classList.contains("loop")) fig.querySelector("audio").loop = ev.target.checked;
    if (ev.target.classList.contains("note")) send(fig, "note", ev.target.value);
  });
  function move(fig, step, byTrack) {
    var all = visibleTakes();
    if (!all.length) return;
    var at = all.indexOf(fig);
    var next;
    if (at < 0) next = all[0];
    else if (!byTrack) next = all[Math.max(0, Math.min(all.length - 1, at + step))];
    else {
      var list = tracks().filter(function (t) { return !t.classList.contains("hidden"); });
      var track = fig.closest("section.track");
      var column = Array.prototype.indexOf.call(track.querySelectorAll("figure.take"), fig);
      var other = list[list.indexOf(track) + step];
      if (!other) return;
      var takes = other.querySelectorAll("figure.take");
      next = takes[Math.min(column, takes.length - 1)];
    }
    if (next) { next.focus(); next.scrollIntoView({block: "nearest"}); }
  }
  document.addEventListener("keydown", function (ev) {
    var tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var fig = figureOf(document.activeElement);
    if (ev.key === "/") { ev.preventDefault(); filter.focus(); return; }
    if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
      ev.preventDefault(); move(fig, ev.key === "ArrowRight" ? 1 : -1, false); return;
    }
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault(); move(fig, ev.key === "ArrowDown" ? 1 : -1, !!fig); return;
    }
    if (!fig) return;
    var audio = fig.querySelector("audio");
    if (ev.key === " " && audio) { ev.preventDefault(); if (audio.paused) audio.play(); else audio.pause(); }
    if (token && fig.querySelector("audio") && (ev.key === "p" || ev.key === "x")) {
      ev.preventDefault();
      send(fig, ev.key === "p" ? "pick" : "reject");
    }
  });
  if (!token) return;
  function showMarks(marks) {
    Object.keys(marks).forEach(function (name) {
      var fig = main.querySelector('figure.take[data-take="' + CSS.escape(name) + '"]');
      if (!fig) return;
      var mark = marks[name];
      fig.classList.toggle("picked", mark.state === "picked");
      fig.classList.toggle("rejected", mark.state === "rejected");
      var note = fig.querySelector("textarea.note");
      if (note && document.activeElement !== note) note.value = mark.note;
    });
  }
  function send(fig, action, note) {
    if (fig.classList.contains("picked") && action === "pick") action = "clear";
    else if (fig.classList.contains("rejected") && action === "reject") action = "clear";
    return fetch("api/mark", {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-Batchgen-Token": token},
      body: JSON.stringify({take: fig.dataset.take, action: action, note: note === undefined ? null : note})
    }).then(function (r) { return r.json(); }).then(function (answer) {
      if (answer.marks) showMarks(answer.marks);
      if (answer.error) document.getElementById("summary").textContent = answer.error;
    });
  }
  function update(state) {
    Object.keys(state.takes).forEach(function (name) {
      var old = main.querySelector('figure.take[data-take="' + CSS.escape(name) + '"]');
      if (!old) return;
      var focused = document.activeElement === old;
      var holder = document.createElement("div");
      holder.innerHTML = state.takes[name];
      var fresh = holder.firstElementChild;
      old.replaceWith(fresh);
      if (focused) fresh.focus();
    });
    if (state.summary !== undefined) {
      document.getElementById("summary").textContent = state.summary;
      var problems = document.getElementById("problems");
      var holder = document.createElement("div");
      holder.innerHTML = state.problems;
      if (problems) problems.remove();
      if (holder.firstElementChild) main.insertBefore(holder.firstElementChild, main.firstChild);
    }
    showMarks(state.marks);
    rev = state.rev;
  }
  function poll() {
    fetch("api/state?since=" + rev, {cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (state) { if (state) update(state); })
      .catch(function () {})
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();"""

"""The listening page: what it shows of a batch (`collect`) and the page itself (`render`, `write`).

No server, no external assets: the page works from file://, plays the WAVs beside it,
draws each file's waveform as a small inline SVG, and filters and sorts with a few lines
of plain JavaScript. Every string from a manifest is escaped.
"""

from __future__ import annotations

import functools
import json
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import text
from ..core.errors import BatchgenError
from ..core.params import PARAMS
from ..core.state import PlanStatus, Status, TaskState
from ..core.task import Task
from ..manifest.parse import Manifest, expand_as_recorded
from ..store import files
from ..store.layout import Layout
from ..store.ledger import Ledger
from .picks import MAX_NOTE, Made, Mark, Picks, PicksError, reconcile
from .picks import load as load_picks
from .waveform import COLUMNS, HEIGHT, NoWaveform, columns, svg_path

if TYPE_CHECKING:  # imported when a page is made: a run that writes none never loads them
    import jinja2
    import markupsafe


@dataclass(slots=True)
class Entry:
    """One task as the page shows it."""

    task: Task
    status: str
    file: str | None = None
    seconds: float | None = None
    wave: str = ""
    no_wave: str | None = None  # why a take that is there has no waveform (its format, a missing extra)
    cost: float | None = None
    job_id: str | None = None
    reason: str | None = None
    extra_files: list[str] = field(default_factory=list)
    seams: tuple[float, ...] = ()  # seconds into the file where a chained track's hops join
    made: Made | None = None  # what a pick is checked against (done takes)


Waves = dict[tuple[str, int, int], tuple[str, float]]  # (file, size, mtime) -> (svg path, seconds)


REASONS = {
    PlanStatus.CHANGED: "changed in the manifest since it was made: the next run makes it again",
    PlanStatus.MISSING: "its file is missing or cut short: the next run fetches it again (no charge)",
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
        if planned in REASONS:
            entry.status = "pending"
            entry.reason = REASONS[planned]
        elif st.status is Status.DONE and st.files:
            entry.file = st.files[0]["path"]
            entry.extra_files = [f["path"] for f in st.files[1:]]
            entry.made = Made(task.track, st.done_digest or "", str(st.files[0].get("sha256", "")))
            entry.wave, entry.seconds, entry.no_wave = _wave(folder / entry.file, {} if waves is None else waves)
            if task.shaped:
                entry.seams = _seams(folder, st, entry.seconds or 0.0)
        elif st.status is Status.FAILED:
            entry.reason = st.reason
        elif st.status is not Status.DONE:
            entry.status = "pending"
            entry.reason = "in flight" if st.pending_job else st.reason
        entries.append(entry)
    return entries


def _wave(path: Path, waves: Waves) -> tuple[str, float | None, str | None]:
    """A take's waveform as an SVG path, its seconds, and why there is none; drawn once per version of the file."""
    try:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            return "", None, None
        key = (str(path), info.st_size, info.st_mtime_ns)
        if key not in waves:
            cols, seconds = columns(path)
            waves[key] = (svg_path(cols), seconds)
        return (*waves[key], None)
    except NoWaveform as why:
        return "", None, str(why)
    except (OSError, ValueError):
        return "", None, None


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
    tracks: dict[str, list[Entry]] = {}
    for entry in entries:
        tracks.setdefault(entry.task.track, []).append(entry)
    marks = picks.marks if picks is not None else {}
    return _template("page.html").render(
        batch=batch,
        live=live,
        summary=summary(entries),
        problems=_problems(entries),
        tracks=[_track_view(name, group, marks) for name, group in tracks.items()],
        hint=_HINT_LIVE if live else _HINT,
        css=_static("page.css"),
        script=_static("page.js"),
        **_SIZES,
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
    return _template("problems.html").render(problems=_problems(entries))


def _problems(entries: Sequence[Entry]) -> list[Entry]:
    return [x for x in entries if x.status in ("failed", "pending")]


def _track_view(name: str, group: Sequence[Entry], marks: Mapping[str, Mark]) -> dict[str, Any]:
    """What one track's card shows: its prompt and parameters, then its takes side by side."""
    first = group[0].task
    params = differing(first.params, {k: v for x in group for k, v in x.task.point.items()})
    if first.length is not None:
        params = {**params, "length": first.length}
    if first.loop is not None:
        params = {**params, "loop": f"{first.loop.bars} bars at {first.loop.bpm:g} bpm"}
    return {
        "name": name,
        "prompt": str(first.prompt or ""),
        "duration": f"{max((x.seconds or 0.0) for x in group):.3f}",
        "cost": f"{sum(x.cost or 0.0 for x in group):g}",
        "model": first.model,
        "version": str(first.params.get("modelVersion", PARAMS["modelVersion"].default)),
        "chips": [(k, _fmt(v)) for k, v in params.items()],
        "takes": [_take_view(x, marks.get(x.task.name)) for x in group],
    }


def take_html(x: Entry, mark: Mark | None = None, live: bool = False) -> str:
    """One take: its label, a waveform with its seams, a player, its mark; or why it is not there."""
    return _template("take.html").render(take=_take_view(x, mark), live=live, **_SIZES)


def _take_view(x: Entry, mark: Mark | None) -> dict[str, Any]:
    meta = (
        f"seed {x.task.seed}" + (f" · {x.seconds:.1f} s" if x.seconds else "") + (f" · {x.cost:g} CU" if x.cost else "")
    )
    if x.seams:
        meta += f" · {len(x.seams) + 1} hops"
    seams = ""
    if x.seams and x.seconds:
        seams = "".join(f"M{s / x.seconds * COLUMNS:.1f} 0v{HEIGHT}" for s in x.seams)
    state = mark.state if mark else None
    return {
        "name": x.task.name,
        "classes": " ".join(filter(None, ("take", x.status, state))),
        "label": _label(x),
        "meta": meta,
        "file": _href(x.file) if x.file else None,
        "extra": [_href(f) for f in x.extra_files],
        "wave": x.wave,
        "no_wave": x.no_wave,
        "seams": seams,
        "loop": x.task.loop is not None,
        "status": x.status,
        "reason": x.reason,
        "job": x.job_id,
        "note": mark.note if mark else "",
    }


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
    target = Layout(folder).page
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


_SIZES = {"columns": COLUMNS, "height": HEIGHT, "max_note": MAX_NOTE}


@functools.cache
def _environment() -> jinja2.Environment:
    """The pages' templates (package data), escaping on by default: the live page carries a
    write token, and every name, prompt and note in it came from a manifest or a person."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("batchgen.listen", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _template(name: str) -> jinja2.Template:
    return _environment().get_template(name)


@functools.cache
def _static(name: str) -> markupsafe.Markup:
    """A stylesheet or script of package data, inlined whole (the page works from file:// too)."""
    import markupsafe  # Jinja2's own escaping

    text = resources.files("batchgen.listen").joinpath("static", name).read_text(encoding="utf-8")
    return markupsafe.Markup(text.removesuffix("\n"))


_HINT = "space plays, arrows move, / filters"
_HINT_LIVE = "space plays, arrows move, p picks, x rejects, / filters"

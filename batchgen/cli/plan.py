"""`validate`, `plan` (and `plan --cost`) and `status`: what a batch holds, without running it."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.state import PlanStatus
from ..core.task import Task
from ..manifest.parse import Manifest, expand_as_recorded, load
from ..store.ledger import TO_PAY, Ledger
from .common import EXIT_OK, _load, _read_batch, _run_async, _with_client


def cmd_validate(args: argparse.Namespace) -> int:
    manifest = load(args.manifest)
    tasks = expand_as_recorded(manifest, None)
    tracks = len(manifest.tracks)
    print(f"{args.manifest}: ok: batch {manifest.batch!r}, {tracks} track{'s' * (tracks != 1)}, {len(tasks)} tasks")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from ..store import finished

    if not args.cost and (done := finished.check(Path(args.manifest), Path(args.out))) is not None:
        _print_finished_plan(done.rows, as_json=args.json)  # nothing changed since it was finished
        return EXIT_OK
    manifest = _load(args)
    tasks, ledger = _read_batch(manifest, args.out)
    rows = ledger.rows(tasks)
    if args.cost:
        return _plan_cost(manifest, rows, ledger, args)
    _print_plan(rows, ledger, as_json=args.json)
    return EXIT_OK


def _print_plan(rows: list[tuple[Task, PlanStatus]], ledger: Ledger, *, as_json: bool) -> None:
    """One row per task; a long track or loop shows the hop it is at (`hop 3/7`)."""
    hops = {task.name: _hop_of(task, ledger) for task, _ in rows if task.shaped}
    if as_json:
        for task, status in rows:
            row: dict[str, object] = {"name": task.name, "track": task.track, "digest": task.digest, "status": status}
            if task.shaped:
                row["hop"], row["hops"] = hops[task.name], task.hop_count
            print(json.dumps(row))
        return
    width = max((len(t.name) for t, _ in rows), default=4)
    print(f"{'NAME':<{width}}  {'DIGEST':<16}  STATUS")
    for task, status in rows:
        where = f" (hop {hops[task.name]}/{task.hop_count})" if task.shaped and status is PlanStatus.IN_FLIGHT else ""
        print(f"{task.name:<{width}}  {task.digest}  {status}{where}")
    counts = Counter(status for _, status in rows)
    print(f"{len(rows)} tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def _print_finished_plan(rows: Sequence[tuple[str, str, str, int]], *, as_json: bool) -> None:
    """`plan` of a finished batch (every task done), as `_print_plan` prints it."""
    if as_json:
        for name, track, digest, hops in rows:
            row: dict[str, object] = {"name": name, "track": track, "digest": digest, "status": "done"}
            if hops:
                row["hop"], row["hops"] = hops, hops
            print(json.dumps(row))
        return
    width = max((len(row[0]) for row in rows), default=4)
    print(f"{'NAME':<{width}}  {'DIGEST':<16}  STATUS")
    print("\n".join(f"{name:<{width}}  {digest}  done" for name, _, digest, _ in rows))
    print(f"{len(rows)} tasks: {len(rows)} done" if rows else "0 tasks: ")


def _hop_of(task: Task, ledger: Ledger) -> int:
    """The hop (1-based) a long track is at: 0 before its first is sent, the last once all are made."""
    st = ledger.state(task.name)
    if st is None or st.digest != task.digest:
        return 0
    return st.hop + 1


def _plan_cost(
    manifest: Manifest, rows: list[tuple[Task, PlanStatus]], ledger: Ledger, args: argparse.Namespace
) -> int:
    from ..run.config import RunConfig
    from ..run.dryrun import dry_runner
    from ..scenario.limits import Admission
    from ..store.cost import Pricer, load_prices, save_prices

    folder = Path(args.out) / manifest.batch
    todo = [task for task, status in rows if status in TO_PAY]

    async def price(client: Any) -> tuple[float, dict[str, float], int]:
        config = RunConfig()  # a run's defaults: the rate its dry runs would go at
        gate = Admission(config.rate, 1, config.backoff)
        pricer = Pricer(dry_runner(client, gate, config.backoff, ledger.uploads, gate.saw), load_prices(folder))
        total, per_track = await pricer.total((task, 0) for task in todo)
        if pricer.asked and folder.exists():
            save_prices(folder, pricer.prices)
        return total, per_track, pricer.asked

    total, per_track, asked = _run_async(lambda: _with_client(price, simulate=args.simulate, project=manifest.project))
    tasks_per_track = Counter(t.track for t in todo)
    if args.json:
        print(
            json.dumps(
                {"batch": manifest.batch, "tasks": len(todo), "total": total, "tracks": per_track, "dry_runs": asked}
            )
        )
        return EXIT_OK
    width = max([len(t) for t in per_track] + [5])
    print(f"{'TRACK':<{width}}  TASKS  {'CU':>8}")
    for track, cost in per_track.items():
        print(f"{track:<{width}}  {tasks_per_track[track]:>5}  {cost:>8g}")
    free = sum(1 for _, status in rows if status in (PlanStatus.DONE, PlanStatus.MISSING))
    print(
        f"total: {total:g} CU for {len(todo)} task(s) to generate "
        f"({free} done or missing cost nothing; {asked} dry run(s))"
    )
    return EXIT_OK


def _money(planned: list[tuple[Task, PlanStatus]], figures: Any, folder: Path) -> dict[str, Any]:
    """Spent, in flight, and an estimate for what is left from the prices known (none asked)."""
    from ..store.cost import load_prices, shape

    prices = load_prices(folder)
    left = [t for t, status in planned if status in TO_PAY]
    shapes = {t.name: [shape(t, hop) for hop in range(t.hop_count)] for t in left}
    return {
        "spent": figures.spent,
        "committed": figures.committed,
        "remaining_estimate": sum(prices.get(key, 0.0) for keys in shapes.values() for key in keys),
        "unpriced": sum(1 for keys in shapes.values() if any(key not in prices for key in keys)),
    }


def inputs_of(manifest: Manifest) -> list[Path]:
    """The files a manifest read besides itself: its tracks file and local input files."""
    read = {Path(track.source) for track in manifest.tracks if track.source != manifest.path}
    return sorted(read | {Path(path) for path, _ in manifest.audio.values()})


def _print_finished(done: Any, *, as_json: bool) -> None:
    """`status` of a finished batch, as its whole computation would print it."""
    made, need = done.hops
    if as_json:
        money = {"spent": done.spent, "committed": 0.0, "remaining_estimate": 0, "unpriced": 0}
        out: dict[str, Any] = {"batch": done.batch, "counts": {"done": done.tasks}, "failed": {}, "cu": money}
        if need:
            out["hops"] = {"made": made, "total": need, "in_flight": {}}
        print(json.dumps(out))
        return
    print(f"{done.batch}: {done.tasks} tasks: {done.tasks} done")
    print(f"  CU: {done.spent:g} spent, 0 committed in flight, about 0 for the 0 task(s) left")
    if need:
        print(f"  hops of chained tracks: {made}/{need} made")


def cmd_status(args: argparse.Namespace) -> int:
    from ..store import finished

    if (done := finished.check(Path(args.manifest), Path(args.out))) is not None:
        _print_finished(done, as_json=args.json)  # nothing changed since it was finished: no replay
        return EXIT_OK
    manifest = _load(args)
    tasks, ledger = _read_batch(manifest, args.out)
    planned = ledger.rows(tasks)  # one plan per task, shared by every figure below
    figures = ledger.figures(planned)
    money = _money(planned, figures, ledger.folder)
    estimate, unpriced = money["remaining_estimate"], money["unpriced"]
    counts = dict(sorted(figures.counts.items()))
    need, made = ledger.hops_made(tasks)
    if counts == {"done": len(tasks)} and not ledger.warnings and not figures.orphans:
        answer = finished.Finished(manifest.batch, len(tasks), figures.spent, (made, need), finished.rows_of(tasks))
        finished.record(Path(args.manifest), ledger.folder, inputs_of(manifest), answer)
    chains = {
        t.name: (_hop_of(t, ledger), t.hop_count)
        for t, status in planned
        if t.shaped and status is PlanStatus.IN_FLIGHT
    }
    if args.json:
        out = {"batch": manifest.batch, "counts": counts, "failed": figures.failures, "cu": money}
        if figures.waiting:
            out["waiting"] = figures.waiting
        if need:
            at = {name: {"hop": hop, "hops": hops} for name, (hop, hops) in chains.items()}
            out["hops"] = {"made": made, "total": need, "in_flight": at}
        print(json.dumps(out))
        return EXIT_OK
    for warning in ledger.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    shown = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"
    print(f"{manifest.batch}: {len(tasks)} tasks: {shown}")
    unknown = f" ({unpriced} not priced yet: run `batchgen plan --cost`)" if unpriced else ""
    print(
        f"  CU: {figures.spent:g} spent, {figures.committed:g} committed in flight, "
        f"about {estimate:g} for the {figures.left} task(s) left{unknown}"
    )
    if need:
        print(f"  hops of chained tracks: {made}/{need} made")
    for name, (hop, hops) in sorted(chains.items()):
        print(f"  in-flight {name}: hop {hop}/{hops}")
    if figures.orphans:
        print(f"  {figures.orphans} task(s) in the journal are no longer in the manifest")
    for name, reason in sorted(figures.failures.items()):
        print(f"  failed {name}: {reason}")
    for name, reason in sorted(figures.waiting.items()):
        print(f"  waiting {name}: {reason}")
    return EXIT_OK

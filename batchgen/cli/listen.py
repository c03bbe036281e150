"""`report`, `serve` and `deliver`: the page, the live room, the delivered files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from .common import EXIT_FAILED, EXIT_OK, _load, _run_async


def cmd_report(args: argparse.Namespace) -> int:
    from ..listen import report

    manifest = _load(args)
    if not (Path(args.out) / manifest.batch).is_dir():
        raise UsageError(f"{Path(args.out) / manifest.batch}: no such batch folder; run the batch first")
    print(report.build(manifest, Path(args.out)))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """The live listening room until Ctrl-C or SIGTERM (exit 0: stopping is how a server ends)."""
    from ..listen.room import Room
    from ..listen.serve import loopback, serve

    manifest = _load(args)
    room = Room(manifest, Path(args.out), multi=args.multi_pick)
    if not loopback(args.host):
        print(
            f"batchgen: warning: serving on {args.host}: anyone who can reach it can listen "
            "(marks still need the page's token)",
            file=sys.stderr,
        )

    def announce(url: str) -> None:
        print(f"listening room for {manifest.batch}: {url}  (Ctrl-C stops it)", flush=True)

    _run_async(lambda: serve(room, args.host, args.port, announce))
    return EXIT_OK


def _options(args: argparse.Namespace, make: Any) -> Any:
    """Deliver's options: a preset's and an engine's values, each given option winning over them."""
    from ..audio.presets import ENGINES, LEVELS

    level = LEVELS.get(args.preset) if args.preset else None
    engine = ENGINES.get(args.engine) if args.engine else None
    return make(
        to=Path(args.to),
        loudness=args.loudness if args.loudness is not None else level.loudness if level else None,
        true_peak=args.true_peak if args.true_peak is not None else level.true_peak if level else None,
        fmt=args.format or (engine.fmt if engine else None),
        sample_rate=args.sample_rate or (engine.sample_rate if engine else None),
        select="all" if args.all else "fill" if args.fill else "picks",
        force=args.force,
        quality=args.quality,
        bitrate=args.bitrate,
        loop_fmt=engine.loop_fmt if engine and not args.format else None,
        allow_mp3_loops=args.allow_mp3_loops,
        preset=args.preset,
        engine=args.engine,
    )


def cmd_deliver(args: argparse.Namespace) -> int:
    """Deliver the picked takes; exit 1 when some could not be (each named), 2 for bad input."""
    from ..listen.deliver import Options, deliver, require_extra

    require_extra()  # before anything else: one line saying what to install
    manifest = _load(args)
    options = _options(args, Options)
    outcome = deliver(manifest, Path(args.out), options, print)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in outcome.problems:
        print(f"batchgen: not delivered: {problem}", file=sys.stderr)
    kept = len(outcome.written) + len(outcome.unchanged)
    print(
        f"{manifest.batch}: {kept} file(s) in {args.to} ({len(outcome.written)} written, "
        f"{len(outcome.unchanged)} unchanged, {len(outcome.removed)} removed), listed in delivery.json and .csv"
    )
    return EXIT_FAILED if outcome.problems else EXIT_OK

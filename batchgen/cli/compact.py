"""`batchgen compact`: a batch's journal rewritten as the events that still matter."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import EXIT_OK, _load


def cmd_compact(args: argparse.Namespace) -> int:
    from ..store.layout import Layout
    from ..store.ledger import Ledger
    from ..store.lock import BatchLock

    batch = _load(args).batch
    folder = Path(args.out) / batch
    layout = Layout(folder)
    if not layout.journal.exists() and not layout.journal.is_symlink():
        print(f"{batch}: no journal in {folder}: nothing to compact")
        return EXIT_OK
    with BatchLock(layout.lock):  # a run of the batch holds it: never under a run's feet
        ledger = Ledger.open(folder, batch, compact_past=None)
        try:
            done = ledger.compact()
        finally:
            ledger.close()
    for warning in done.dropped:
        print(f"warning: {warning}; not carried over", file=sys.stderr)
    print(f"{batch}: {done.summary}")
    return EXIT_OK

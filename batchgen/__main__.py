"""`python -m batchgen` and the `batchgen` command.

Until the CLI installs its own handlers, a Ctrl-C or SIGTERM during startup exits 130
quietly instead of printing a traceback from whatever module was being imported.

The cyclic collector is off while the program loads: see `gcpause.settle`, which turns
it back on when the command starts its work.

Once a command has returned, everything it wrote is closed (the journal, the lock,
files, the page): the process flushes its output and leaves without the interpreter's
teardown of every module and object, which does nothing and costs about 25 ms of CPU
(up to 60 ms) in every run.
"""

import gc
import os
import signal
import sys
import threading


def _leave(signum: int, frame: object) -> None:
    from .core import interrupts  # a few lines, no imports of its own

    interrupts.mark(signum)  # kept even if the exit below lands where Python drops it
    raise SystemExit(130)


def run() -> None:
    signal.signal(signal.SIGINT, _leave)
    signal.signal(signal.SIGTERM, _leave)
    gc.disable()  # until the command settles: what loads now lives as long as the process
    from .cli import entry
    from .core import interrupts

    if interrupts.pending():  # a signal during the imports whose exit Python dropped
        raise SystemExit(130)

    code = entry()
    if threading.active_count() == 1:  # no thread of ours is left to finish its work
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # a closed pipe: the interpreter's own exit reports it as it always has
        else:
            os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":  # the guard keeps spawned worker processes from rerunning the CLI
    run()

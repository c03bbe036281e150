"""`python -m batchgen` and the `batchgen` command.

Until the CLI installs its own handlers, a Ctrl-C or SIGTERM during startup exits 130
quietly instead of printing a traceback from whatever module was being imported.
"""

import signal


def _leave(signum: int, frame: object) -> None:
    raise SystemExit(130)


def run() -> None:
    signal.signal(signal.SIGINT, _leave)
    signal.signal(signal.SIGTERM, _leave)
    from .cli import entry

    raise SystemExit(entry())


if __name__ == "__main__":  # the guard keeps spawned worker processes from rerunning the CLI
    run()

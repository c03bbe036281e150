"""The entry point: parse, dispatch to the command, one line and an exit code for any error."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..core import interrupts
from ..core.errors import BatchgenError
from ..core.gcpause import paused_gc, settle
from .args import build_parser
from .common import EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    interrupts.clear()  # each command starts unsignalled (a startup signal was acted on before)
    previous_int = None
    with contextlib.suppress(ValueError):  # startup's quiet handler: Ctrl-C is KeyboardInterrupt now
        previous_int = signal.signal(signal.SIGINT, _interrupt)
    previous = _terminate_like_interrupt()
    unraisable = sys.unraisablehook
    sys.unraisablehook = _quiet_interrupt(unraisable)
    for stream in (sys.stdout, sys.stderr):  # a path or name with broken Unicode is shown, never a crash
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        args = build_parser().parse_args(argv)
        code = _dispatch(args)
        if interrupts.pending() and code != 130:  # a signal whose KeyboardInterrupt Python dropped: still a stop
            raise KeyboardInterrupt
        return code
    except BatchgenError as err:
        print(f"batchgen: {' '.join(str(err).split())}", file=sys.stderr)  # always one line
        return err.exit_code
    except KeyboardInterrupt:
        print("batchgen: interrupted", file=sys.stderr)
        # CPython 3.11 marks a KeyboardInterrupt raised inside exec() of a string (which
        # dataclasses and namedtuple do while a module imports) as unhandled, and then
        # exits by re-raising SIGINT (-2) even though it was caught. Evaluating any string
        # clears that mark, so the exit code stays the 130 users and cron expect.
        exec("None")
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    finally:
        sys.unraisablehook = unraisable
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
        interrupts.clear()  # the command is over: its signal is not the next one's (in one process)


def entry() -> int:
    """The `batchgen` command: `main`, then ignore late signals while the process exits.

    A second Ctrl-C or SIGTERM that lands after the first has stopped the run would
    otherwise hit interpreter shutdown and turn a clean exit 130 into a traceback.
    """
    code = main()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return code


def _interrupt(signum: int, frame: object) -> None:
    interrupts.mark(signum)
    raise KeyboardInterrupt


def _quiet_interrupt(default: Callable[[Any], object]) -> Callable[[Any], None]:
    """An unraisable-exception hook that lets a signal's KeyboardInterrupt go quietly.

    A signal can land while Python runs a callback it cannot raise from (a weakref's, in
    the middle of an import); the KeyboardInterrupt is then printed with a traceback and
    dropped. The signal was marked (`interrupts`), and `main` stops on the mark with its
    one line and exit 130: the traceback would only alarm a cron log.
    """

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and interrupts.pending():
            return
        default(unraisable)

    return hook


def _terminate_like_interrupt() -> Any:
    """SIGTERM stops batchgen the way Ctrl-C does (exit 130), in every command and phase.

    A run installs its own graceful handlers for both signals while it runs; this
    covers everything around it (reading the manifest, `plan --cost`, the report).
    """
    try:
        return signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return None


READ_ONLY = frozenset({"validate", "plan", "status", "report"})


def _dispatch(args: argparse.Namespace) -> int:
    # Each command's module is loaded when it runs: `status` never imports what `run` needs.
    from .compact import cmd_compact
    from .listen import cmd_deliver, cmd_report, cmd_serve
    from .models import cmd_models
    from .plan import cmd_plan, cmd_status, cmd_validate
    from .run import cmd_run
    from .simulate import cmd_simulate

    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "validate": cmd_validate,
        "plan": cmd_plan,
        "status": cmd_status,
        "compact": cmd_compact,
        "report": cmd_report,
        "simulate": cmd_simulate,
        "serve": cmd_serve,
        "deliver": cmd_deliver,
        "models": cmd_models,
    }
    if args.command in READ_ONLY:
        # Short commands that build a whole batch's tasks and states and exit: the cyclic
        # collector would walk those millions of live objects again and again (16 % of
        # `status` on 100,000 tasks) and find nothing. Reference counting still frees.
        with paused_gc():
            return commands[args.command](args)
    if args.command != "run":  # a run settles once it has loaded what it runs with
        settle()
    return commands[args.command](args)

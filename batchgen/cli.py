"""Command line: argparse -> config -> one asyncio.run; errors -> one line + exit code.

Nothing below this module prints to the user or exits; everything raises a
`BatchgenError` whose `exit_code` says what cron should see.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import __version__
from .core import text
from .core.errors import BatchgenError, UsageError
from .core.gcpause import paused_gc, settle
from .core.state import PlanStatus
from .core.task import Task
from .manifest.parse import Manifest, expand_as_recorded, load
from .store.ledger import TO_PAY, Ledger

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit 2, as for every other bad input; the full usage is a --help away.
        self.exit(EXIT_USAGE, f"batchgen: error: {message} (see: {self.prog} --help)\n")


def _number(
    kind: type[int] | type[float], least: float, *, strictly: bool = False, most: float | None = None
) -> Callable[[str], Any]:
    """An argparse type: a finite number of `kind`, at least (or, strictly, above) `least`, at most `most`."""
    word = "whole number" if kind is int else "number"
    bound = f"greater than {least:g}" if strictly else f"at least {least:g}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a {word}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a finite {word}")
        if value < least or (strictly and value == least):
            raise argparse.ArgumentTypeError(f"{text[:40]!r} must be {bound}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} must be at most {most:g}")
        return value

    return parse


# Every number from the command line is finite and within a range that makes sense:
# nan, inf, 1e-300 submissions per second or a port of 70000 are refused with exit 2.
_rate = _number(float, 0.01, most=10_000)
_slots = _number(int, 1, most=10_000)
_interval = _number(float, 0.01, most=3600)
_timeout = _number(float, 0.01, most=7 * 86400)
_retries = _number(int, 0, most=100)
_bytes = _number(int, 1024, most=2**40)
_wait = _number(float, 0.1, most=86400)
_share = _number(float, 0, most=1)
_seconds = _number(float, 0, most=7 * 86400)
_port = _number(int, 0, most=65535)
_money = _number(float, 0, strictly=True, most=1e12)
_limit = _number(int, 1, most=1_000_000)
_jitter = _number(float, 0, most=1000)
_lufs = _number(float, -70, most=0)
_dbtp = _number(float, -20, most=0)
_rate_hz = _number(int, 8000, most=384_000)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="batchgen",
        description="Turn a YAML manifest of music prompts into a folder of MusicGen tracks via the Scenario API.",
        epilog="Exit codes: 0 all done, 1 some tasks failed, 2 bad input or credentials, "
        "3 batch locked by another run, 130 stopped by a signal (rerun to resume).",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_run(sub.add_parser("run", help="generate every task; resumes where the last run stopped"))
    validate = sub.add_parser("validate", help="check and expand a manifest; no network")
    validate.add_argument("manifest", metavar="MANIFEST")
    plan = _with_out(sub.add_parser("plan", help="one row per task with its status"))
    plan.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    plan.add_argument("--cost", action="store_true", help="price the remaining tasks with the API's dry run")
    plan.add_argument("--simulate", action="store_true", help="price against the built-in simulator")
    status = _with_out(sub.add_parser("status", help="counts by status from the journal; no network"))
    status.add_argument("--json", action="store_true", help="one JSON object")
    _with_out(sub.add_parser("report", help="write the batch's listening page index.html"))
    _add_simulate(sub.add_parser("simulate", help="run the Scenario-compatible simulator"))
    serve = _with_out(sub.add_parser("serve", help="the listening room, live: pick, reject and note takes"))
    serve.add_argument("--port", type=_port, default=8788, help="port on 127.0.0.1 (default 8788; 0: any free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1 only)")
    serve.add_argument("--multi-pick", action="store_true", help="allow more than one pick per track")
    _add_deliver(_with_out(sub.add_parser("deliver", help="picked takes to a folder: levelled, tagged, listed")))
    return parser


def _add_deliver(deliver: argparse.ArgumentParser) -> None:
    deliver.add_argument("--to", required=True, metavar="DIR", help="the delivery folder")
    deliver.add_argument("--loudness", type=_lufs, metavar="LUFS", help="integrated loudness target, e.g. -14 or -23")
    deliver.add_argument("--true-peak", type=_dbtp, metavar="DBTP", help="true-peak ceiling (-1 with --loudness)")
    deliver.add_argument("--format", choices=("wav", "flac"), help="file format (default: keep WAV or FLAC)")
    deliver.add_argument("--sample-rate", type=_rate_hz, metavar="HZ", help="resample to HZ")
    which = deliver.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every done take, picked or not")
    which.add_argument("--fill", action="store_true", help="the picks, and the first take of tracks with none")
    deliver.add_argument("--force", action="store_true", help="replace files in DIR that batchgen did not write")


def _with_out(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("manifest", metavar="MANIFEST", help="the batch's YAML manifest")
    p.add_argument("--out", metavar="DIR", default="output", help="output root (default: output)")
    return p


def _add_run(run: argparse.ArgumentParser) -> None:
    _with_out(run)
    run.add_argument("--rate", type=_rate, metavar="N", help="submissions per second (default 2)")
    run.add_argument("--max-in-flight", type=_slots, metavar="N", help="jobs submitted and not finished (8)")
    run.add_argument("--workers", type=_slots, metavar="N", help="submit workers (default: enough for the rate)")
    run.add_argument("--poll-interval", type=_interval, metavar="S", help="first poll after S seconds (1)")
    run.add_argument("--retry-failed", action="store_true", help="give tasks that failed before another try")
    run.add_argument("--max-cost", type=_money, metavar="CU", help="stop submitting before spending more")
    run.add_argument("--dry-run", action="store_true", help="print the plan, submit nothing")
    run.add_argument("--simulate", action="store_true", help="run against the built-in simulator (no credentials)")
    run.add_argument("--job-retries", type=_retries, metavar="N", help="resubmissions after a job failure (default 1)")
    run.add_argument("--hop-redos", type=_retries, metavar="N", help="remakes of an unusable chain hop (default 1)")
    run.add_argument("--job-timeout", type=_timeout, metavar="S", help="fail a job running after S seconds (1800)")
    run.add_argument("--max-download-bytes", type=_bytes, metavar="N", help="refuse larger files (2 GiB)")
    run.add_argument("--download-timeout", type=_timeout, metavar="S", help="give up a file after S seconds (1800)")
    run.add_argument("--max-wait", type=_wait, metavar="S", help="longest wait a server may ask for (900)")
    run.add_argument("--confirm-above", type=_money, metavar="CU", help="ask before spending more than CU")
    run.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    run.add_argument("--no-report", action="store_true", help="do not write index.html at the end")
    run.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines as text or JSON")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the summary and errors")


def _add_simulate(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=_port, default=8787)
    sim.add_argument("--key", help="API key to accept (default $SCENARIO_API_KEY)")
    sim.add_argument("--secret", help="API secret to accept (default $SCENARIO_API_SECRET)")
    sim.add_argument("--job-time", type=_seconds, default=3.0, metavar="S", help="seconds a job takes (default 3)")
    sim.add_argument(
        "--rate-limit", type=_limit, metavar="N", help="answer 429 past N submits and dry runs in any 1 s window"
    )
    sim.add_argument("--jitter", type=_jitter, default=0.0, metavar="MS", help="delay each arrival up to MS ms")
    sim.add_argument("--action-limit", type=_limit, metavar="N", help="answer 429 past N jobs at once")
    sim.add_argument("--error-rate", type=_share, default=0.0, metavar="P", help="share of 500/503 answers")
    sim.add_argument("--drop-rate", type=_share, default=0.0, metavar="P", help="share of dropped connections")
    sim.add_argument("--failure-rate", type=_share, default=0.0, metavar="P", help="share of jobs that fail")
    sim.add_argument("--no-refund", action="store_true", help="failed jobs keep their charge (billing.disableRefund)")
    sim.add_argument("--discount", type=_share, default=0.0, metavar="P", help="share of each price taken off")
    sim.add_argument("--truncate-rate", type=_share, default=0.0, metavar="P", help="share of truncated downloads")
    sim.add_argument("--short-pages", action="store_true", help="job listings return short and empty pages")
    sim.add_argument(
        "--continuation-new-only", action="store_true", help="continuations answer new audio only, not the prompt first"
    )
    sim.add_argument("--url-ttl", type=_seconds, default=3600.0, metavar="S", help="signed URL lifetime (3600)")
    sim.add_argument("--seed", type=int, help="seed for the fault dice")
    sim.add_argument("--fast-audio", action="store_true", help="one cached tone for every asset (benchmarks)")


def main(argv: Sequence[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        with contextlib.suppress(ValueError):  # startup's quiet handler: Ctrl-C is KeyboardInterrupt now
            signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = _terminate_like_interrupt()
    for stream in (sys.stdout, sys.stderr):  # a path or name with broken Unicode is shown, never a crash
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
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
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entry() -> int:
    """The `batchgen` command: `main`, then ignore late signals while the process exits.

    A second Ctrl-C or SIGTERM that lands after the first has stopped the run would
    otherwise hit interpreter shutdown and turn a clean exit 130 into a traceback.
    """
    code = main()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return code


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run`, safe against a signal at any moment of its start.

    The loop is built with SIGINT and SIGTERM held back (one landing half-way through
    its construction leaves a half-made loop whose finaliser prints a traceback), and a
    coroutine the signal kept from starting is closed, not left "never awaited".
    """
    import asyncio

    def new_loop() -> asyncio.AbstractEventLoop:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        loop: asyncio.AbstractEventLoop | None = None
        try:
            loop = asyncio.new_event_loop()
        finally:
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal held back is delivered here
            except BaseException:
                # ... and raises right here: the loop never reaches the Runner, so close it
                # now rather than leave it to a finaliser (which, inside a garbage cycle,
                # may find its sockets already gone and print a traceback).
                if loop is not None:
                    loop.close()
                raise
        return loop

    coro = None
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            coro = make()
            return runner.run(coro)
    finally:
        if coro is not None:
            coro.close()  # a no-op once it ran; stops the warning when it never did


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


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
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "validate": cmd_validate,
        "plan": cmd_plan,
        "status": cmd_status,
        "report": cmd_report,
        "simulate": cmd_simulate,
        "serve": cmd_serve,
        "deliver": cmd_deliver,
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


def _read_batch(manifest: Manifest, out: str) -> tuple[list[Task], Ledger]:
    """The batch's tasks, as its journal's recorded seed makes them, and its ledger (read-only)."""
    ledger = Ledger.read(Path(out) / manifest.batch, manifest.batch)
    return expand_as_recorded(manifest, ledger.base_seed), ledger


def cmd_run(args: argparse.Namespace) -> int:
    from .run.progress import Reporter

    manifest = load(args.manifest)
    if args.dry_run:
        tasks, ledger = _read_batch(manifest, args.out)
        _print_plan(ledger.rows(tasks), ledger, as_json=False)
        print("dry run: nothing submitted")
        return EXIT_OK
    config = _run_config(args)
    reporter = Reporter(args.log_format, args.quiet)
    confirm = _confirmer(args.confirm_above, args.yes)

    from .run.runner import Runner

    runner: Any = None

    async def go(client: Any) -> Any:
        nonlocal runner
        runner = Runner(manifest, client, config, reporter, confirm)
        return await runner.run()

    connections = config.max_in_flight + config.downloaders + config.poll_concurrency
    settle()
    try:
        result = _run_async(
            lambda: _with_client(go, simulate=args.simulate, connections=connections, project=manifest.project)
        )
    finally:
        reporter.close()
    _print_summary(manifest, result, args.max_cost, args.simulate)
    if not args.no_report and (result.done or result.failed or result.skipped):
        from .listen import report

        # The run's own tasks and ledger: no second journal replay or expansion.
        folder = Path(args.out) / manifest.batch
        page = report.write(folder, manifest.batch, report.collect(runner.tasks, runner.ledger, folder))
        print(f"  listening page: {page}")
    exit_code: int = result.exit_code
    return exit_code


def _run_config(args: argparse.Namespace) -> Any:
    from .core.retry import Backoff
    from .run.config import RunConfig
    from .run.download import Limits

    # Options left unset keep RunConfig's defaults, so each default is written once.
    options = {
        "rate": args.rate,
        "max_in_flight": args.max_in_flight,
        "workers": args.workers,
        "poll_interval": args.poll_interval,
        "job_retries": args.job_retries,
        "hop_redos": args.hop_redos,
        "job_timeout": args.job_timeout,
        "max_cost": args.max_cost,
    }
    given = {"max_bytes": args.max_download_bytes, "deadline": args.download_timeout}
    limits = Limits(**{k: v for k, v in given.items() if v is not None})
    backoff = Backoff() if args.max_wait is None else Backoff(max_wait=args.max_wait)
    return RunConfig(
        out=Path(args.out),
        retry_failed=args.retry_failed,
        limits=limits,
        backoff=backoff,
        **{k: v for k, v in options.items() if v is not None},
    )


def cmd_report(args: argparse.Namespace) -> int:
    from .listen import report

    manifest = load(args.manifest)
    if not (Path(args.out) / manifest.batch).is_dir():
        raise UsageError(f"{Path(args.out) / manifest.batch}: no such batch folder; run the batch first")
    print(report.build(manifest, Path(args.out)))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """The live listening room until Ctrl-C or SIGTERM (exit 0: stopping is how a server ends)."""
    from .listen.room import Room
    from .listen.serve import loopback, serve

    manifest = load(args.manifest)
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


def cmd_deliver(args: argparse.Namespace) -> int:
    """Deliver the picked takes; exit 1 when some could not be (each named), 2 for bad input."""
    from .listen.deliver import Options, deliver, require_extra

    require_extra()  # before anything else: one line saying what to install
    manifest = load(args.manifest)
    options = Options(
        to=Path(args.to),
        loudness=args.loudness,
        true_peak=args.true_peak,
        fmt=args.format,
        sample_rate=args.sample_rate,
        select="all" if args.all else "fill" if args.fill else "picks",
        force=args.force,
    )
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


# On a terminal, ask before spending more than this unless --confirm-above says otherwise.
CONFIRM_ABOVE_ON_TTY = 500.0


def _confirmer(threshold: float | None, yes: bool) -> Any:
    """The question asked before a big spend; None when nothing needs asking."""
    import asyncio

    tty = sys.stdin.isatty()
    if threshold is None and tty:
        threshold = CONFIRM_ABOVE_ON_TTY
    if yes or threshold is None:
        return None
    limit = threshold

    async def confirm(total: float, tasks: int) -> bool:
        if total <= limit:
            return True
        if not tty:
            raise UsageError(
                f"the estimate, {total:g} CU, is above --confirm-above {limit:g} and there is no terminal to ask; "
                "pass --yes to go ahead"
            )
        answer = await asyncio.to_thread(input, f"Spend about {total:g} CU on {tasks} tasks? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    return confirm


async def _with_client(use: Any, *, simulate: bool, connections: int = 32, project: str | None = None) -> Any:
    """Call `use(client)` with a client for the real API, or for an in-process simulator.

    The manifest's `project:` wins over SCENARIO_PROJECT_ID; every request carries it.
    """
    import os

    from .scenario.client import Credentials, ScenarioClient

    project = project or os.environ.get("SCENARIO_PROJECT_ID") or None
    if project is not None and (not project.isprintable() or project != text.clean(project)):
        raise UsageError("SCENARIO_PROJECT_ID holds characters no request can carry")
    if not simulate:
        async with ScenarioClient.from_env(max_connections=connections, project=project) as client:
            return await use(client)
    from .simulator import Simulator, serve, throwaway_credentials

    key, secret = throwaway_credentials()
    job_time = _env_number("BATCHGEN_SIMULATE_JOB_TIME", 2.0, most=3600.0)
    async with (
        serve(Simulator(key=key, secret=secret, job_time=job_time)) as url,
        ScenarioClient(url, Credentials(key, secret), max_connections=connections, project=project) as client,
    ):
        return await use(client)


def _env_number(name: str, default: float, *, most: float) -> float:
    """A number of seconds from the environment, checked like a command-line number."""
    import os

    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return float(_number(float, 0.0, most=most)(text))
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"{name}: {err}") from None


def _print_summary(manifest: Manifest, result: Any, max_cost: float | None, simulated: bool = False) -> None:
    made = result.done
    line = (
        f"batch {manifest.batch}: {made + result.skipped}/{result.total} done "
        f"({made} new, {result.skipped} already done), {len(result.failed)} failed, "
        f"{result.spent:g} CU spent ({result.batch_spent:g} in all), {result.elapsed:.1f}s"
    )
    print(line)
    if result.paid_failures:
        print(f"  of which {result.paid_failures:g} CU paid for jobs that failed without a refund")
    if result.discount:
        print(f"  discounts: {result.discount:g} CU")
    if result.estimate is not None:
        print(f"  estimate before submitting: {result.estimate:g} CU")
    if result.left_for_budget:
        print(
            f"  {result.left_for_budget} task(s) left for lack of budget (--max-cost {max_cost:g}); "
            "rerun with a higher --max-cost to finish"
        )
    if result.paid_twice:
        print(f"  paid twice: {', '.join(result.paid_twice)} (landed unusable and made again)")
    if result.left_for_wait:
        print(
            f"  {result.left_for_wait} task(s) not submitted: {result.held_off}; "
            "they stay new and the next run submits them"
        )
    for name, reason in sorted(result.failed.items()):
        print(f"  failed {name}: {reason}")
    if result.interrupted:
        print("stopped by signal: state saved; run the same command again to resume")
    if simulated:
        print("  (on the built-in simulator: the files are its synthesized stand-ins, not MusicGen's)")


def cmd_validate(args: argparse.Namespace) -> int:
    manifest = load(args.manifest)
    tasks = expand_as_recorded(manifest, None)
    tracks = len(manifest.tracks)
    print(f"{args.manifest}: ok: batch {manifest.batch!r}, {tracks} track{'s' * (tracks != 1)}, {len(tasks)} tasks")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    manifest = load(args.manifest)
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


def _hop_of(task: Task, ledger: Ledger) -> int:
    """The hop (1-based) a long track is at: 0 before its first is sent, the last once all are made."""
    st = ledger.state(task.name)
    if st is None or st.digest != task.digest:
        return 0
    return st.hop + 1


def _plan_cost(
    manifest: Manifest, rows: list[tuple[Task, PlanStatus]], ledger: Ledger, args: argparse.Namespace
) -> int:
    from .run.config import RunConfig
    from .run.dryrun import dry_runner
    from .scenario.limits import Admission
    from .store.cost import Pricer, load_prices, save_prices

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


def cmd_status(args: argparse.Namespace) -> int:
    from .store.cost import load_prices, shape

    manifest = load(args.manifest)
    tasks, ledger = _read_batch(manifest, args.out)
    planned = ledger.rows(tasks)  # one plan per task, shared by every figure below
    figures = ledger.figures(planned)
    prices = load_prices(ledger.folder)
    left = [t for t, status in planned if status in TO_PAY]
    shapes = {t.name: [shape(t, hop) for hop in range(t.hop_count)] for t in left}
    estimate = sum(prices.get(key, 0.0) for keys in shapes.values() for key in keys)
    unpriced = sum(1 for keys in shapes.values() if any(key not in prices for key in keys))
    money = {
        "spent": figures.spent,
        "committed": figures.committed,
        "remaining_estimate": estimate,
        "unpriced": unpriced,
    }
    counts = dict(sorted(figures.counts.items()))
    need, made = ledger.hops_made(tasks)
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


def cmd_simulate(args: argparse.Namespace) -> int:
    import os

    from .simulator import Faults, Simulator
    from .simulator.server import run_forever

    key = args.key or os.environ.get("SCENARIO_API_KEY") or "sim-key"
    secret = args.secret or os.environ.get("SCENARIO_API_SECRET") or "sim-secret"
    faults = Faults(
        rate_limit=args.rate_limit,
        jitter=args.jitter / 1000,
        action_limit=args.action_limit,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        failure_rate=args.failure_rate,
        no_refund=args.no_refund,
        discount=args.discount,
        truncate_rate=args.truncate_rate,
        short_pages=args.short_pages,
        continuation_new_only=args.continuation_new_only,
        url_ttl=args.url_ttl,
        seed=args.seed,
    )
    sim = Simulator(key=key, secret=secret, job_time=args.job_time, faults=faults, fast_audio=args.fast_audio)

    def announce(url: str) -> None:
        print(f"Scenario simulator listening; in another shell:\n  export SCENARIO_BASE_URL={url}", flush=True)
        if secret == "sim-secret":  # the documented default pair: safe to show
            print(f"  export SCENARIO_API_KEY={key} SCENARIO_API_SECRET={secret}", flush=True)
        print("Ctrl-C stops it.", flush=True)

    try:
        _run_async(lambda: run_forever(sim, args.host, args.port, announce))
    except KeyboardInterrupt:
        pass
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    return EXIT_OK

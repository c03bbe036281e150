"""`batchgen run`: the run's settings from the command line, the confirmation, the summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..core.gcpause import settle
from ..manifest.parse import Manifest, UnknownModel, load
from ..store import finished
from ..store.layout import Layout
from ..store.lock import BatchLock
from .common import EXIT_OK, _read_batch, _run_async, _with_client
from .plan import _print_plan, inputs_of


def cmd_run(args: argparse.Namespace) -> int:
    from ..run.models import BatchSchemas
    from ..run.progress import Reporter

    if not (args.dry_run or args.refresh_models) and (done := finished.check(Path(args.manifest), Path(args.out))):
        _print_finished(done, Path(args.out), args.simulate)  # nothing changed since it was finished
        return EXIT_OK
    if not args.dry_run and (folder := finished.folder_of(Path(args.manifest), Path(args.out))) is not None:
        BatchLock(Layout(folder).lock).probe()  # a run still going: exit 3 before reading 100,000 rows
    resolve = BatchSchemas(Path(args.out), refresh=args.refresh_models)
    try:
        manifest: Manifest | None = load(args.manifest, resolve)
    except UnknownModel:
        if args.dry_run:
            raise
        manifest = None  # its schema is asked of the API below, then recorded with the batch
    if args.dry_run:
        return _dry_run(manifest, args.out)
    config = _run_config(args)
    reporter = Reporter(args.log_format, args.quiet)
    confirm = _confirmer(args.confirm_above, args.yes)

    from ..run.runner import Runner

    runner: Any = None

    async def go(client: Any) -> Any:
        nonlocal runner
        from ..run.models import load_for_run

        def say(message: str) -> None:
            reporter.event("model", message=message, error=True)

        refresh = args.refresh_models
        checked = await load_for_run(
            args.manifest, resolve, client, config.backoff, refresh=refresh, say=say, loaded=manifest
        )
        runner = Runner(checked.manifest, client, config, reporter, confirm, started=checked.save)
        return await runner.run()

    connections = config.max_in_flight + config.downloaders + config.poll_concurrency
    settle()
    project = manifest.project if manifest is not None else None
    try:
        result = _run_async(lambda: _with_client(go, simulate=args.simulate, connections=connections, project=project))
    finally:
        reporter.close()
    manifest = runner.manifest
    _print_summary(manifest, result, args.max_cost, args.simulate)
    if not args.no_report and (result.done or result.failed or result.skipped):
        from ..listen import report

        # The run's own tasks and ledger: no second journal replay or expansion.
        folder = Path(args.out) / manifest.batch
        page = report.write(folder, manifest.batch, report.collect(runner.tasks, runner.ledger, folder))
        print(f"  listening page: {page}")
    _remember(args, manifest, runner, result)
    exit_code: int = result.exit_code
    return exit_code


def _dry_run(manifest: Manifest | None, out: str) -> int:
    assert manifest is not None  # a dry run needs no network: an unknown model was refused
    tasks, ledger = _read_batch(manifest, out)
    _print_plan(ledger.rows(tasks), ledger, as_json=False)
    print("dry run: nothing submitted")
    return EXIT_OK


def _remember(args: argparse.Namespace, manifest: Manifest, runner: Any, result: Any) -> None:
    """Every task is done: record it, so the next tick answers without replaying or expanding."""
    finished_now = not result.failed and result.done + result.skipped == result.total
    if result.exit_code == EXIT_OK and finished_now and not runner.ledger.warnings:
        need, made = runner.ledger.hops_made(runner.tasks)
        rows = finished.rows_of(runner.tasks)
        answer = finished.Finished(manifest.batch, result.total, result.batch_spent, (made, need), rows)
        finished.record(Path(args.manifest), runner.folder, inputs_of(manifest), answer)


def _print_finished(done: finished.Finished, out: Path, simulated: bool) -> None:
    """A run's summary for a batch finished earlier, as a run that found nothing to do prints it."""
    print(
        f"batch {done.batch}: {done.tasks}/{done.tasks} done (0 new, {done.tasks} already done), 0 failed, "
        f"0 CU spent ({done.spent:g} in all), 0.0s"
    )
    if simulated:
        print("  (on the built-in simulator: the files are its synthesized stand-ins, not the models' own)")
    page = out / done.batch / "index.html"
    if page.exists():
        print(f"  listening page: {page}")


def _run_config(args: argparse.Namespace) -> Any:
    from ..core.retry import Backoff
    from ..run.config import RunConfig
    from ..run.download import Limits

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
        print("  (on the built-in simulator: the files are its synthesized stand-ins, not the models' own)")

"""Parsing: the parser, its subcommands and the checks on every number a user types."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..audio.presets import ENGINES, LEVELS
from ..core.errors import UsageError
from .common import EXIT_USAGE


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


_bandwidth = _number(int, 1, most=10**12)


_lufs = _number(float, -70, most=0)


_dbtp = _number(float, -20, most=0)


_rate_hz = _number(int, 8000, most=384_000)
_quality = _number(float, 0, most=10)
_kbps = _number(int, 8, most=512)


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
    _with_out(sub.add_parser("compact", help="rewrite the batch's journal as one line per task"))
    _with_out(sub.add_parser("report", help="write the batch's listening page index.html"))
    _add_simulate(sub.add_parser("simulate", help="run the Scenario-compatible simulator"))
    serve = _with_out(sub.add_parser("serve", help="the listening room, live: pick, reject and note takes"))
    serve.add_argument("--port", type=_port, default=8788, help="port on 127.0.0.1 (default 8788; 0: any free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1 only)")
    serve.add_argument("--multi-pick", action="store_true", help="allow more than one pick per track")
    _add_deliver(_with_out(sub.add_parser("deliver", help="picked takes to a folder: levelled, tagged, listed")))
    models = sub.add_parser("models", help="the audio models batchgen knows, or one model's inputs; no network")
    models.add_argument("show", nargs="?", choices=["show"], help="show one model's inputs")
    models.add_argument("model", nargs="?", metavar="ID", help="the model's id, e.g. model_elevenlabs-sound-effects-v2")
    models.add_argument("--live", action="store_true", help="ask the API for the model's schema now (cached a day)")
    models.add_argument("--simulate", action="store_true", help="ask the built-in simulator instead")
    return parser


def _add_deliver(deliver: argparse.ArgumentParser) -> None:
    deliver.add_argument("--to", required=True, metavar="DIR", help="the delivery folder")
    deliver.add_argument("--loudness", type=_lufs, metavar="LUFS", help="integrated loudness target, e.g. -14 or -23")
    deliver.add_argument("--true-peak", type=_dbtp, metavar="DBTP", help="true-peak ceiling (-1 with --loudness)")
    deliver.add_argument(
        "--format", choices=("wav", "flac", "ogg", "opus", "mp3"), help="file format (default: keep WAV or FLAC)"
    )
    deliver.add_argument("--preset", choices=tuple(LEVELS), help="a loudness target and true-peak ceiling by name")
    deliver.add_argument("--for", dest="engine", choices=tuple(ENGINES), help="the format an engine imports as is")
    deliver.add_argument("--quality", type=_quality, metavar="Q", help="Ogg Vorbis quality, 0 to 10 (default 6)")
    deliver.add_argument("--bitrate", type=_kbps, metavar="KBPS", help="Opus (128) and MP3 (192) bitrate in kbps")
    deliver.add_argument("--allow-mp3-loops", action="store_true", help="deliver loops as MP3 (no loop points)")
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
    run.add_argument(
        "--refresh-models", action="store_true", help="record the models' live schemas in place of the batch's"
    )
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
    sim.add_argument("--bandwidth", type=_bandwidth, metavar="B", help="CDN bytes per second per download")
    sim.add_argument("--seed", type=int, help="seed for the fault dice")
    sim.add_argument("--fast-audio", action="store_true", help="one cached tone for every asset (benchmarks)")


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

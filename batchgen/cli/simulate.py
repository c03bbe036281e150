"""`batchgen simulate`: the simulator with the faults asked for."""

from __future__ import annotations

import argparse

from ..core.errors import UsageError
from .common import EXIT_OK, _run_async


def cmd_simulate(args: argparse.Namespace) -> int:
    import os

    from ..simulator import Faults, Simulator
    from ..simulator.server import run_forever

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
        bandwidth=args.bandwidth,
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

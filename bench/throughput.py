"""Runner throughput on the simulator with no rate limit: tasks per second and CPU per task.

The simulator runs in its own process so its CPU is not counted; the batchgen run is a
child process whose user+sys time (from wait4) is divided by the task count.

    python bench/throughput.py [--tasks 500] [--job-time 0]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--job-time", type=float, default=0.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tracks = "".join(f"  - {{name: t{i}, prompt: 'bench {i}'}}\n" for i in range(args.tasks))
        (work / "m.yaml").write_text(
            f"batch: bench\nseed: 1\ndefaults: {{duration: 1, modelVersion: melody-large}}\ntracks:\n{tracks}"
        )
        sim = subprocess.Popen(
            [sys.executable, "-m", "batchgen", "simulate", "--port", "0", "--job-time", str(args.job_time)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sim.stdout is not None
            url = ""
            while not url:
                line = sim.stdout.readline()
                if match := re.search(r"SCENARIO_BASE_URL=(\S+)", line):
                    url = match.group(1)
            env = dict(os.environ, SCENARIO_BASE_URL=url, SCENARIO_API_KEY="sim-key", SCENARIO_API_SECRET="sim-secret")
            cmd = [
                sys.executable,
                "-m",
                "batchgen",
                "run",
                str(work / "m.yaml"),
                "--out",
                str(work / "out"),
                "-q",
                "--rate",
                "100000",
                "--max-in-flight",
                str(args.max_in_flight),
                "--poll-interval",
                "0.05",
            ]
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            sim.terminate()
            sim.wait()
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"tasks={args.tasks} exit={proc.returncode} wall={wall:.2f}s "
        f"throughput={args.tasks / wall:.1f} tasks/s cpu={cpu:.2f}s cpu/task={cpu / args.tasks * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()

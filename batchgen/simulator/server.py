"""Serving the simulator: in the current loop, in a background thread, in a process of its
own, or as a command."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from .app import Simulator


@asynccontextmanager
async def serve(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `sim` in the running loop; yields the base URL to use as SCENARIO_BASE_URL."""
    runner = web.AppRunner(sim.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]  # the real port when asked for port 0
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        await runner.cleanup()


def throwaway_credentials() -> tuple[str, str]:
    """A key and secret that exist only for one `run --simulate`."""
    return f"sim_{secrets.token_hex(6)}", secrets.token_urlsafe(24)


class SimulatorThread:
    """The simulator on its own loop in a daemon thread, for tests that run the CLI as a
    subprocess (the server must outlive a SIGKILLed client)."""

    def __init__(self, sim: Simulator, host: str = "127.0.0.1") -> None:
        self.sim = sim
        self.host = host
        self.base_url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("simulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self.sim, self.host) as url:
            self.base_url = url
            self._ready.set()
            await self._stop.wait()

    def stats(self) -> dict[str, Any]:
        """The server's /__stats, fetched over HTTP like any client would."""
        return stats_of(self.base_url)


class SimulatorProcess:
    """`batchgen simulate` in a process of its own, for measurements of timing.

    A simulator thread shares the client's interpreter: while the client holds the GIL,
    the server cannot take a request in, so its arrival clock runs late by the client's
    work, differently for each request (up to 10 ms more than the jitter asked for,
    measured on a loaded 2-core machine), as no network would. `args` are the command's
    options (`--rate-limit 20 --jitter 5`); the key and secret go by environment.
    """

    def __init__(self, *args: str, key: str = "sim-key", secret: str = "sim-secret") -> None:
        self.args = args
        self.key, self.secret = key, secret
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimulatorProcess:
        env = dict(os.environ, SCENARIO_API_KEY=self.key, SCENARIO_API_SECRET=self.secret)
        command = [sys.executable, "-m", "batchgen", "simulate", "--port", "0", *self.args]
        self._proc = proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:  # it says where it listens, then nothing more
            if match := re.search(r"SCENARIO_BASE_URL=(\S+)", line):
                self.base_url = match.group(1)
                return self
        self.__exit__()
        raise RuntimeError(f"simulator did not start (exit code {proc.returncode})")

    def __exit__(self, *exc: object) -> None:
        if (proc := self._proc) is None:
            return
        self._proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # as Ctrl-C: it stops serving and exits 0
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stats(self) -> dict[str, Any]:
        """The server's /__stats, fetched over HTTP like any client would."""
        return stats_of(self.base_url)


def stats_of(base_url: str) -> dict[str, Any]:
    """A simulator's /__stats (what it was asked, what it made, the faults it injected)."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/__stats", timeout=30) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


async def run_forever(sim: Simulator, host: str, port: int, announce: Any) -> None:
    """Serve until cancelled (Ctrl-C), after telling the user what to export."""
    async with serve(sim, host, port) as url:
        announce(url)
        await asyncio.Event().wait()

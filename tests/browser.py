"""A headless Chromium driven over the DevTools protocol with aiohttp's websocket client.

Just enough of CDP for the listening-page tests: open a URL, evaluate JavaScript,
press keys, take a screenshot. No extra dependency: aiohttp is already batchgen's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-file-access-from-files",
)


KEYS = {
    " ": ("Space", 32),
    "ArrowLeft": ("ArrowLeft", 37),
    "ArrowUp": ("ArrowUp", 38),
    "ArrowRight": ("ArrowRight", 39),
    "ArrowDown": ("ArrowDown", 40),
    "p": ("KeyP", 80),
    "x": ("KeyX", 88),
}


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    """`async with Browser(path) as b:` then `await b.open(url)`, `await b.eval(js)`."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900) -> None:
        self.executable = executable
        self.size = (width, height)
        self._ids = itertools.count(1)
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._profile = tempfile.TemporaryDirectory()
        self._drainer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Browser:
        self._proc = await asyncio.create_subprocess_exec(
            self.executable,
            *FLAGS,
            f"--window-size={self.size[0]},{self.size[1]}",
            f"--user-data-dir={self._profile.name}",
            "--remote-debugging-port=0",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        port = None
        async with asyncio.timeout(30):
            while port is None:
                line = (await self._proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("chromium exited before DevTools was ready")
                if match := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                    port = int(match.group(1))
        self._drainer = asyncio.create_task(self._drain())  # chromium blocks if its stderr fills
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        return self

    async def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while await self._proc.stderr.readline():
            pass

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        self._profile.cleanup()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        async with asyncio.timeout(30):
            while True:
                msg = json.loads((await self._ws.receive()).data)
                if msg.get("id") == ident:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})

    async def open(self, url: str) -> None:
        """Navigate and return once the page's load event has fired."""
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": "Page.navigate", "params": {"url": url}}))
        async with asyncio.timeout(30):
            while json.loads((await self._ws.receive()).data).get("method") != "Page.loadEventFired":
                pass

    async def audio_loaded(self) -> list[dict[str, Any]]:
        """Every <audio> of the page, loaded to its metadata: its source, whether it loaded, its length."""
        loaded: list[dict[str, Any]] = await self.eval(
            """Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(done => {
                 const ok = () => done({src: a.currentSrc, ok: true, duration: a.duration});
                 const bad = () => done({src: a.currentSrc, ok: false, error: a.error && a.error.code});
                 if (a.readyState >= 1) return ok();
                 a.addEventListener('loadedmetadata', ok, {once: true});
                 a.addEventListener('error', bad, {once: true});
                 a.preload = 'metadata'; a.load();
               })))"""
        )
        return loaded

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def press(self, key: str) -> None:
        """A key pressed and released, as the keyboard would send it to the focused element."""
        code, vk = KEYS[key]
        down = {"key": key, "code": code, "windowsVirtualKeyCode": vk}
        await self.call("Input.dispatchKeyEvent", type="keyDown", text=key if len(key) == 1 else "", **down)
        await self.call("Input.dispatchKeyEvent", type="keyUp", **down)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

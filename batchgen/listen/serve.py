"""`batchgen serve`: the listening room on 127.0.0.1, live, with pick / reject / note.

The page is `index.html`'s, with a token in it. It polls `api/state` for what changed
(new takes, counts, marks) and posts marks to `api/mark`. Audio files are served from
the batch folder by name, with Range requests, and only the done takes' files.

Who may do what: requests must name this server in `Host` (a page on another site that
re-points a name at 127.0.0.1, DNS rebinding, is refused), and a write must carry the
token that only a page served by this process holds, in a header a cross-site form
cannot send. Every value shown is escaped by the page builder; the page is also served
with a content security policy that allows no outside source at all.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..core import text
from ..core.errors import BatchgenError, UsageError
from .room import MarkRefused, Room

FOLLOW_EVERY = 0.5  # seconds between looks at the journal
MAX_BODY = 64 * 1024  # bytes of a mark request
TOKEN_HEADER = "X-Batchgen-Token"
POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; media-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def make_app(room: Room, token: str, hosts: set[str] | None) -> web.Application:
    """The room's HTTP face. `hosts`: the Host values accepted (None: any, when not on loopback)."""
    routes = _Routes(room, token, hosts)
    app = web.Application(middlewares=[routes.guard], client_max_size=MAX_BODY)
    app.router.add_get("/", routes.page)
    app.router.add_get("/index.html", routes.page)
    app.router.add_get("/api/state", routes.state)
    app.router.add_post("/api/mark", routes.mark)
    app.router.add_get("/{name}", routes.audio)
    return app


class _Routes:
    def __init__(self, room: Room, token: str, hosts: set[str] | None) -> None:
        self.room, self.token, self.hosts = room, token, hosts

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.hosts is not None and request.host not in self.hosts:
            return _error(421, "this server answers to 127.0.0.1 and localhost only")
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", POLICY)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response

    async def page(self, request: web.Request) -> web.Response:
        html = self.room.page(self.token)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def state(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _error(400, "since must be a whole number")
        return web.json_response(self.room.state(since), headers={"Cache-Control": "no-store"})

    async def mark(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), self.token.encode()):
            return _error(403, "missing or wrong token: reload the page from this server")
        origin = request.headers.get("Origin")
        if origin is not None and self.hosts is not None and origin.removeprefix("http://") not in self.hosts:
            return _error(403, "cross-origin request refused")
        if request.content_type != "application/json":
            return _error(415, "expected application/json")
        try:
            body = text.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"a mark is at most {MAX_BODY:,} bytes")
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json can follow
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object")
        try:
            return web.json_response(self.room.mark(body, time.time()))
        except MarkRefused as refused:
            return _error(refused.status, str(refused))
        except BatchgenError as err:  # picks.json could not be written
            return _error(500, str(err))

    async def audio(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.room.files():
            return _error(404, "no such take file")
        path = self.room.folder / name
        try:
            info = path.lstat()
        except OSError:
            return _error(404, "the file is gone")
        if not stat.S_ISREG(info.st_mode):  # never a symlink out of the batch folder
            return _error(404, "not a regular file")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


async def follow(room: Room, warn: Callable[[str], None]) -> None:
    """Keep the room current: read the batch again (in a thread) whenever its journal changed."""
    shown: set[str] = set()
    while True:
        if room.changed():
            try:
                room.take(await asyncio.to_thread(room.read))
            except BatchgenError as err:  # a journal gone bad mid-way: keep showing what was read
                room.warnings.append(str(err))
        for warning in room.warnings:
            if warning not in shown:
                shown.add(warning)
                warn(warning)
        await asyncio.sleep(FOLLOW_EVERY)


async def serve(
    room: Room, host: str, port: int, announce: Callable[[str], None], stop: asyncio.Event | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, or `stop` is set (then return: stopping is how a server ends)."""
    token = secrets.token_urlsafe(24)
    room.take(await asyncio.to_thread(room.read))
    hosts: set[str] | None = set() if loopback(host) else None  # filled in once the port is known
    runner = web.AppRunner(make_app(room, token, hosts), access_log=None, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as err:
            raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err} (--port picks another)") from None
        bound = runner.addresses[0][1]
        if hosts is not None:
            hosts.update(f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]", host))
        announce(f"http://{'127.0.0.1' if hosts is not None else host}:{bound}/")
        stop = stop or asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(follow(room, lambda w: print(f"warning: {w}", file=sys.stderr, flush=True)))
            await stop.wait()
            watcher.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


__all__ = ["follow", "loopback", "make_app", "serve"]

"""The CDN: signed, expiring asset URLs served with Range and If-Range, at the bandwidth fault's pace."""

from __future__ import annotations

import asyncio
import hmac
import time

from aiohttp import web

from .answers import drop
from .assets import AssetsApi


class CdnApi(AssetsApi):
    """Signed, expiring asset URLs with Range, and the download faults."""

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        self.requests["GET /cdn"] += 1
        asset = self.assets.get(request.match_info["asset_id"])
        if "Authorization" in request.headers:
            # As S3-style storage does: a signed URL plus an auth header is refused.
            return web.Response(status=400, text="Only one auth mechanism allowed")
        try:
            expires = int(request.query.get("expires", "0"))
        except ValueError:
            expires = 0
        if asset is None or not hmac.compare_digest(request.query.get("sig", ""), self._sign(asset.id, expires)):
            return web.Response(status=403, text="AccessDenied: bad signature")
        if time.time() > expires:
            self.faults.injected["url-expired-seen"] += 1
            return web.Response(status=403, text="AccessDenied: Request has expired")
        data = await self._bytes(asset)
        if self.faults.roll("html", self.faults.html_rate):
            return web.Response(
                status=200, content_type="text/html", text="<html><body>Service Unavailable</body></html>"
            )
        if self.faults.roll("oversize", self.faults.oversize_rate):
            data = data + bytes(len(data))  # a misbehaving origin: twice what the asset declared
        start, status = 0, 200
        headers = {"Content-Type": asset.mime, "ETag": asset.etag, "Accept-Ranges": "bytes"}
        range_header = None if self.faults.ignore_range else request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if range_header and (if_range is None or if_range == asset.etag):
            try:
                unit, spec = range_header.split("=", 1)
                start = int(spec.split("-", 1)[0])
            except ValueError:
                return web.Response(status=416)
            if unit != "bytes" or start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        truncate = self.faults.roll("truncate", self.faults.truncate_rate) and len(body) > 64
        cut = len(body) // 2 if truncate else len(body)
        try:
            await self._send(resp, body[:cut])
        except ConnectionResetError:
            return resp  # the client hung up (a cancelled download): nothing to tell it
        self.bytes_served += cut
        if truncate:
            drop(request)
            return resp
        self.downloads_complete[asset.id] += 1
        await resp.write_eof()
        return resp

    async def _send(self, resp: web.StreamResponse, body: bytes, step: int = 65536) -> None:
        """Write a body in chunks at the bandwidth fault's pace."""
        pause = step / self.faults.bandwidth if self.faults.bandwidth else 0.0
        for offset in range(0, len(body), step):
            # The wait comes before each chunk: a pause after the last one would hold the
            # connection after the client has every byte, and the client's next request on
            # it (kept alive, back in its pool) would sit unread until the pause ends.
            if pause:
                await asyncio.sleep(pause)
            await resp.write(body[offset : offset + step])

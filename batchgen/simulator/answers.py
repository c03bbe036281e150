"""How the simulator answers: errors as the API shapes them, request bodies, dropped connections, auth."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
from datetime import datetime
from typing import Any

from aiohttp import web


def error(
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
    body_extra: dict[str, Any] | None = None,
) -> web.Response:
    body = {"reason": reason, "trace_id": secrets.token_hex(8), **(body_extra or {})}
    return web.json_response(body, status=status, headers=headers)


def charged(cost: float, discount: float) -> dict[str, Any]:
    """What a generate answer says of money (SDK `GenerateRunModelResponse`): cost after discount."""
    out: dict[str, Any] = {"creativeUnitsCost": cost - discount, "costDetails": {"custom-generation": cost - discount}}
    if discount:
        out["creativeUnitsDiscount"] = discount
    return out


async def json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def drop(request: web.Request) -> None:
    """Close the connection without an answer, as a crashed proxy would."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError


def parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def check_basic(header: str, key: str, secret: str) -> bool:
    """True when an Authorization header carries exactly this key and secret."""
    if not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(decoded, f"{key}:{secret}")

"""The API's credentials: HTTP Basic from a key and a secret, never shown."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from ..core import text
from ..core.errors import UsageError


@dataclass(frozen=True, slots=True)
class Credentials:
    """API key and secret. repr and str never show the secret (nor the whole key)."""

    key: str
    secret: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        key = env.get("SCENARIO_API_KEY") or env.get("SCENARIO_SDK_API_KEY")
        secret = env.get("SCENARIO_API_SECRET") or env.get("SCENARIO_SDK_API_SECRET")
        if not key or not secret:
            raise UsageError(
                "no API credentials: set SCENARIO_API_KEY and SCENARIO_API_SECRET "
                "(or run with --simulate to try the built-in simulator)"
            )
        for name, value in (("API key", key), ("API secret", secret)):
            # An environment variable with bytes that are not UTF-8 (a paste gone wrong) holds
            # surrogates; no header can carry it. Named, never shown.
            if not value.isprintable() or text.clean(value) != value:
                raise UsageError(f"the {name} in the environment holds characters no request can carry")
        return cls(key, secret)

    @property
    def token(self) -> str:
        return base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()

    @property
    def header(self) -> str:
        return f"Basic {self.token}"

    def __repr__(self) -> str:
        return f"Credentials(key={self.key[:4]}..., secret=***)"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """`text` with the secret, the key and the auth token (also URL-quoted) removed."""
        for needle in (self.token, quote(self.token, safe=""), self.secret, quote(self.secret, safe=""), self.key):
            if needle and needle in text:
                text = text.replace(needle, "***")
        return text

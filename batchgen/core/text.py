"""Text as it enters: no lone surrogates, whatever JSON or YAML said.

JSON and YAML may spell a UTF-16 surrogate on its own (`"\ud800"`); Python keeps it in
the `str`, and the first write of that text as UTF-8 (the journal, a sidecar, the page,
the terminal) raises `UnicodeEncodeError`. Every JSON document batchgen reads goes
through `loads`, and every YAML scalar through `clean`, so nothing downstream meets one:
a lone surrogate becomes U+FFFD, a proper pair becomes the character it encodes.
"""

from __future__ import annotations

import json
import re
from typing import Any

REPLACEMENT = "\ufffd"
# Only a \\u escape can put a surrogate in parsed JSON (strict UTF-8 decoding refuses the
# raw bytes), so text without one needs no walk: the common case costs one search.
_ESCAPED = re.compile(rb"\\u[dD][89a-fA-F]")
_ESCAPED_STR = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(value: Any) -> Any:
    """`value` with every string in it (keys too) free of lone surrogates."""
    if isinstance(value, str):
        return _clean_str(value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def _clean_str(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def loads(data: str | bytes | bytearray) -> Any:
    """`json.loads`, then `clean` where the text could hold a surrogate at all."""
    value = json.loads(data)
    risky = _ESCAPED_STR.search(data) if isinstance(data, str) else _ESCAPED.search(data)
    return clean(value) if risky else value


__all__ = ["REPLACEMENT", "clean", "loads"]

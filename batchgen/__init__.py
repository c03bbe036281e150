"""batchgen: a YAML manifest of music prompts in, a folder of MusicGen tracks out."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# Names are imported on first use (PEP 562), so `batchgen` starts without loading YAML,
# aiohttp and the rest until a command needs them.
_EXPORTS = {
    "ApiError": "core.errors",
    "BatchgenError": "core.errors",
    "CredentialsError": "core.errors",
    "DiskError": "core.errors",
    "DownloadError": "core.errors",
    "JournalError": "core.errors",
    "LockedError": "core.errors",
    "ManifestError": "core.errors",
    "UsageError": "core.errors",
    "Manifest": "manifest",
    "Track": "manifest",
    "expand": "manifest",
    "load": "manifest",
    "Task": "core.task",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)

"""batchgen: a YAML manifest of music prompts in, a folder of MusicGen tracks out."""

from .errors import (
    ApiError,
    BatchgenError,
    CredentialsError,
    DiskError,
    DownloadError,
    JournalError,
    LockedError,
    ManifestError,
    UsageError,
)
from .manifest import Manifest, Track, expand, load
from .task import Task

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "BatchgenError",
    "CredentialsError",
    "DiskError",
    "DownloadError",
    "JournalError",
    "LockedError",
    "Manifest",
    "ManifestError",
    "Task",
    "Track",
    "UsageError",
    "__version__",
    "expand",
    "load",
]

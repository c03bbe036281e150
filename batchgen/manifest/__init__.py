"""A YAML manifest (bounded, with line numbers) into a validated `Manifest`, and that into
the list of `Task`s.
"""

from .parse import Manifest, Track, expand, expand_as_recorded, load

__all__ = ["Manifest", "Track", "expand", "expand_as_recorded", "load"]

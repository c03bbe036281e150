"""Command line: argparse -> config -> one asyncio.run; errors -> one line + exit code.

Parsing is `args`, the entry point and dispatch `app`, and each command its own module
(`run`, `plan`, `listen`, `simulate`). Nothing below this package prints to the user or
exits; everything raises a `BatchgenError` whose `exit_code` says what cron should see.
"""

from .app import entry, main

__all__ = ["entry", "main"]

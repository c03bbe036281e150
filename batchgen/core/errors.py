"""The exception hierarchy: one root, children that carry data, not just text.

Nothing below the CLI prints or exits; the CLI maps these to one-line messages and
exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

QUOTE_LIMIT = 200  # characters of a value an error message may quote


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)`, at most `limit` characters: an error stays one short line whatever the input.

    Safe for values repr itself cannot print (integers of thousands of digits) and for
    structures that share parts many times over (a YAML alias bomb).
    """
    import reprlib

    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = limit
    short.maxlevel, short.maxlist, short.maxdict, short.maxtuple, short.maxset = 3, 6, 6, 6, 6
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
            return "a number of more than 75 digits"
        text = short.repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__} too large to show"
    text = " ".join(text.split())  # never a line break in a one-line error
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BatchgenError(Exception):
    """Root of every error batchgen raises on purpose."""

    exit_code = 1


class ManifestError(BatchgenError):
    """Bad input in a manifest (or a file it names), located to file, line and field."""

    exit_code = 2

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = f" {self.field}:" if self.field else ""
        return f"{where}:{what} {self.message}"


class UsageError(BatchgenError):
    """Bad command-line input or environment (for example missing credentials)."""

    exit_code = 2


class LockedError(BatchgenError):
    """Another `run` holds the batch folder's lock."""

    exit_code = 3

    def __init__(self, path: str, pid: int | None, what: str = "batch") -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path}: {what} is locked by {holder}; wait for it or stop it")


class JournalError(BatchgenError):
    """A journal that cannot be used for this batch (other batch, newer version)."""

    exit_code = 2


class ErrorKind(StrEnum):
    """How an API error should be handled; decides retry versus give up."""

    TRANSIENT = "transient"  # 408/429/5xx, resets, timeouts: try again later
    PERMANENT = "permanent"  # 400/404/422: this task will never succeed as sent
    CREDENTIALS = "credentials"  # 401/403 on the API: every task would fail


@dataclass(eq=False)
class ApiError(BatchgenError):
    """An HTTP or connection failure talking to the Scenario API.

    `retry_after` is the server's hint in seconds (from Retry-After, retry-after-ms or
    a body `remainingSeconds`), `action_limit` the team's concurrent-job ceiling from
    a 429's `details.actionLimit`. `status` is 0 for connection-level failures.
    """

    status: int
    reason: str
    kind: ErrorKind
    trace_id: str | None = None
    retry_after: float | None = None
    action_limit: int | None = None
    method: str = ""
    url: str = ""
    # True when the request may have reached the server and been acted on: a POST
    # that failed this way may have created (and billed) a job.
    ambiguous: bool = False

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return 2 if self.kind is ErrorKind.CREDENTIALS else 1

    def __str__(self) -> str:
        head = f"HTTP {self.status}" if self.status else "connection error"
        where = f" on {self.method} {self.url}" if self.method else ""
        trace = f" (trace {self.trace_id})" if self.trace_id else ""
        return f"{head}{where}: {self.reason}{trace}"


class CredentialsError(ApiError):
    """The API refused the credentials; raised so the run can stop at once."""


class MalformedAnswer(ApiError):
    """A 2xx answer that does not hold up (not JSON, no job id, wrong types).

    Transient: the request is tried again. After a POST it is also `ambiguous`: the
    server may have acted on it, so a job is looked for before any retry.
    """

    def __init__(
        self, reason: str, *, status: int = 200, ambiguous: bool = False, method: str = "", url: str = ""
    ) -> None:
        super().__init__(status, reason, ErrorKind.TRANSIENT, method=method, url=url, ambiguous=ambiguous)


class HeldOff(BatchgenError):
    """The API asked us to come back later than `--max-wait`: not in this run.

    Nothing was created (a 429 creates no job); what is not submitted stays for the next
    run, as a task left by `--max-cost` does."""

    def __init__(self, seconds: float, max_wait: float) -> None:
        self.seconds, self.max_wait = seconds, max_wait
        super().__init__(f"the API asked to come back in {_duration(seconds)}, longer than --max-wait {max_wait:g} s")


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds:.0f} s"


class DownloadError(BatchgenError):
    """An asset could not be fetched or failed verification."""

    def __init__(self, reason: str, *, expired: bool = False, retryable: bool = True, restart: bool = False) -> None:
        self.reason = reason
        self.expired = expired  # the signed URL is no longer valid: refresh it
        self.retryable = retryable
        self.restart = restart  # the bytes so far cannot be trusted: retry from the first byte
        super().__init__(reason)


class DiskError(BatchgenError):
    """Writing to the batch folder failed (disk full, permissions): stop submitting."""

    def __init__(self, path: str, err: OSError) -> None:
        self.path = path
        self.errno = err.errno
        hints = {28: "free some space", 27: "the file is too large for this filesystem or limit"}
        hint = hints.get(err.errno or 0, "check the folder's permissions")
        super().__init__(f"{path}: {err.strerror or err}; {hint}, then rerun to finish")


class UnsafeFileError(DiskError):
    """A path batchgen would write is a symlink, a folder or otherwise not its own file."""

    exit_code = 2

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.errno = None
        BatchgenError.__init__(self, f"{path}: {problem}")

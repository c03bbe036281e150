"""When to ask about running jobs, and how: pure policy, no I/O.

Two goals pull apart: notice a finished job quickly (every second a finished job goes
unnoticed holds a slot of `--max-in-flight`), and spend few requests on it (the quota is
the account's). The answer is to learn how long jobs take, ask around the time they
should end, and when many are due at once, ask with one list call instead of one call
per job.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

LAG = 0.02  # ask a moment after the expected end, not a moment before it
MIN_STEP = 0.05
DUE_STEP = 0.05  # once a job is due, look again after this share of a typical job
LIST_STEP = 0.03  # least time between two listings, as a share of a typical job
AGE_STEP = 0.1  # with no job time known yet, look again after this share of the job's age
PAGE = 100  # the list endpoint's largest page


def poll_delay(age: float, first: float, longest: float) -> float:
    """Seconds until the next poll of a job of `age` seconds when nothing is known yet.

    Short at first, then a tenth of the job's age, so a job that runs for minutes costs
    tens of polls, not hundreds, and the first jobs of a run are seen at most a tenth of
    their time after they end (a quarter held the first wave's slots for half a second
    at J=2 s). A listing answers for every running job at once, so these polls are cheap.
    """
    return max(first, min(longest, age * AGE_STEP))


def next_poll(age: float, estimate: float | None, first: float, longest: float) -> float:
    """Seconds until the next poll of a job that has run for `age` seconds.

    With an estimate of how long jobs take: wait for the expected end, then look often
    (every 5 % of a typical job) until it is over.
    """
    if estimate is None:
        return poll_delay(age, first, longest)
    if age < estimate:
        return estimate - age + LAG
    return min(longest, max(MIN_STEP, estimate * DUE_STEP))


def prefer_list(due: int, pages: int) -> bool:
    """True when listing finished jobs (`pages` calls) beats asking for each due job."""
    return due >= 2 and pages < due


class DurationEstimate:
    """The median of recent job durations.

    Durations come from the server's own createdAt/updatedAt when it gives them (free of
    our polling delay), else from what we observed.
    """

    def __init__(self, window: int = 25, needed: int = 1) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self._needed = needed
        self._value: float | None = None  # kept up to date by `add`: read for every poll scheduled

    def add(self, seconds: float) -> None:
        if seconds < 0:
            return
        self._samples.append(seconds)
        if len(self._samples) >= self._needed:
            ordered = sorted(self._samples)
            middle = len(ordered) // 2
            self._value = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    @property
    def value(self) -> float | None:
        return self._value


def epoch(text: str | None) -> float | None:
    """An API timestamp (ISO 8601, maybe with Z) as seconds since the epoch."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None

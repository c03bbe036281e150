"""Polling policy (pure) and what it costs against the simulator (requests per task)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from batchgen import load
from batchgen.core.polling import DurationEstimate, epoch, next_poll, poll_delay, prefer_list
from batchgen.core.retry import Backoff
from batchgen.manifest import expand
from batchgen.run.progress import Reporter
from batchgen.run.runner import RunConfig, Runner
from batchgen.run.watcher import SERVER_MARGIN, SKEW_MARGIN, Watch, Watcher
from batchgen.scenario.auth import Credentials
from batchgen.scenario.client import ScenarioClient
from batchgen.scenario.limits import Cooldown, RateLimit

from ..conftest import KEY, SECRET, Served


@pytest.mark.parametrize(
    ("age", "estimate", "expected"),
    [
        (0.0, None, 1.0),  # nothing known: the first poll after --poll-interval
        (40.0, None, 4.0),  # then a tenth of the job's age
        (400.0, None, 15.0),  # never more than poll_max
        (0.0, 20.0, 20.02),  # known: wait for the expected end
        (19.0, 20.0, 1.02),
        (25.0, 20.0, 1.0),  # overdue: every 5 % of a typical job
        (25.0, 0.1, 0.05),  # but not more often than MIN_STEP
    ],
)
def test_next_poll(age: float, estimate: float | None, expected: float) -> None:
    """Polls wait for a job's expected end, then look often; without an estimate they back off with age."""
    assert next_poll(age, estimate, first=1.0, longest=15.0) == pytest.approx(expected)


def test_poll_delay_and_list_choice() -> None:
    """Listing wins when it takes fewer calls than asking each due job."""
    assert poll_delay(2.0, 1.0, 15.0) == 1.0
    assert prefer_list(due=10, pages=1) and prefer_list(due=3, pages=2)
    assert not prefer_list(due=1, pages=1) and not prefer_list(due=4, pages=4)


def test_duration_estimate_is_a_median() -> None:
    """One slow outlier does not move the estimate much; nothing is known before a sample."""
    est = DurationEstimate(window=5)
    assert est.value is None
    for seconds in (10, 11, 9, 60):
        est.add(seconds)
    assert est.value == 10.5
    assert epoch("2026-01-01T00:00:00.500Z") == pytest.approx(1767225600.5)
    assert epoch("not a date") is None


def test_cooldown_with_an_injected_clock() -> None:
    """A 429's pause extends, never shortens, and ends on the clock's say-so."""
    now = [100.0]
    cooldown = Cooldown(clock=lambda: now[0])
    cooldown.trip(5)
    cooldown.trip(2)
    assert cooldown.remaining == 5
    now[0] = 104.0
    assert cooldown.remaining == 1
    now[0] = 106.0
    assert cooldown.remaining == 0 and cooldown.trips == 2


async def test_a_slot_counts_from_when_its_request_left() -> None:
    """The window runs from a request's departure, not its grant: a slow request holds its slot longer."""
    rate = RateLimit(2, window=0.2)  # two in any 0.2 s (0.204 s with the slack)
    quick, slow = await rate.acquire(), await rate.acquire()
    assert quick is not None and slow is not None
    quick.departed()
    await asyncio.sleep(0.12)  # the slow one is still on its way out, 0.12 s after its grant
    slow.departed()
    slow_left = time.monotonic()
    third = await asyncio.wait_for(rate.acquire(), 5)  # the quick one's place frees first
    assert third is not None
    third.departed()
    assert time.monotonic() - slow_left < rate.period
    fourth = await asyncio.wait_for(rate.acquire(), 5)  # grant + period passed long ago; departure + period not
    assert fourth is not None
    assert time.monotonic() - slow_left >= rate.period


async def test_every_slot_on_its_way_out_holds_the_next_request() -> None:
    """With every slot granted and none departed, the next waits for a departure, then a window."""
    rate = RateLimit(1, window=0.1)
    slot = await rate.acquire()
    assert slot is not None
    waiting = asyncio.create_task(rate.acquire())
    await asyncio.sleep(0.15)
    assert not waiting.done()  # a window has passed since the grant, but the request never left
    with slot:  # leaving the block counts as the departure
        pass
    left = time.monotonic()
    assert await asyncio.wait_for(waiting, 5) is not None
    assert time.monotonic() - left >= rate.period


async def test_a_stop_releases_every_waiting_submitter_without_a_slot() -> None:
    """Submitters queued for the window give up at once when the run stops; none takes a slot."""
    rate = RateLimit(1, window=10)
    first = await rate.acquire()
    assert first is not None
    first.departed()
    abort = asyncio.Event()
    waiting = [asyncio.create_task(rate.acquire(abort)) for _ in range(5)]
    await asyncio.sleep(0.05)
    abort.set()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 2) == [None] * 5
    assert rate.wait() == pytest.approx(rate.period, abs=0.2)  # the window still holds only the first


def test_backoff_full_jitter_and_hints() -> None:
    """Full jitter spreads over [0, base * 2^(n-1)], capped; a server hint is a floor."""
    policy = Backoff(base=0.5, cap=8, attempts=3)
    assert policy.delay(1, rand=lambda: 1.0) == 0.5
    assert policy.delay(4, rand=lambda: 1.0) == 4.0
    assert policy.delay(10, rand=lambda: 1.0) == 8.0
    assert policy.delay(3, rand=lambda: 0.0) == 0.0
    assert policy.delay(1, hint=7.0, rand=lambda: 1.0) == pytest.approx(7.5)
    assert policy.exhausted(3) and not policy.exhausted(2)


async def _run_at_once(served: Served, tmp_path: Path, n: int) -> int:
    """Run `n` tracks of 0.6 s jobs, all in flight together; the number done."""
    served.sim.job_time = 0.6
    path = tmp_path / "m.yaml"
    path.write_text(
        "batch: poll\nseed: 1\ndefaults: {duration: 1, modelVersion: melody-large}\ntracks:\n"
        + "".join(f"  - {{name: t{i}, prompt: p{i}}}\n" for i in range(n))
    )
    config = RunConfig(out=tmp_path / "out", rate=200, max_in_flight=n, poll_interval=0.1, poll_max=0.5)
    async with ScenarioClient(served.url, Credentials(KEY, SECRET)) as client:
        return (await Runner(load(path), client, config, Reporter(quiet=True)).run()).done


async def test_many_jobs_in_flight_are_polled_by_listing(served: Served, tmp_path: Path) -> None:
    """With 40 jobs running at once, one listing settles many: far fewer poll requests than jobs."""
    assert await _run_at_once(served, tmp_path, 40) == 40
    seen = served.sim.requests
    polls = seen["GET /v1/jobs"] + seen["GET /v1/jobs/{job_id}"]
    assert seen["GET /v1/jobs"] > 0
    assert polls < 20, dict(seen)
    total = sum(seen.values())  # the one dry run included
    assert total / 40 < 3.5, dict(seen)


async def test_listings_reach_back_from_the_servers_own_created_at(served: Served, tmp_path: Path) -> None:
    """Listings ask for jobs created since the oldest running one, by the server's clock,
    less a quarter second: not two seconds of finished jobs that every listing would add back."""
    assert await _run_at_once(served, tmp_path, 30) == 30
    created = sorted(job.created_wall for job in served.sim.jobs.values())
    assert served.sim.listed_after, "no listing was made"
    # createdAt is written in milliseconds: allow for the rounding on top of the margin.
    assert min(served.sim.listed_after) >= created[0] - SERVER_MARGIN - 0.002, (created[0], served.sim.listed_after)


def test_a_watch_without_the_servers_time_reaches_back_further(tmp_path: Path) -> None:
    """A POST answer without createdAt leaves our clock as the estimate, with room for skew."""
    watcher = Watcher(
        None,  # type: ignore[arg-type]  # never called: nothing here makes a request
        first=1.0,
        longest=15.0,
        concurrency=1,
        job_timeout=60.0,
        backoff=Backoff(),
        on_end=_never,
        on_error=lambda err: None,
    )
    path = tmp_path / "m.yaml"
    path.write_text("batch: w\nseed: 1\ntracks:\n  - {name: a, prompt: p, duration: 1}\n")
    task = expand(load(path))[0]
    watcher.submitted(task, 0, "job_a", 1.0, created="2026-11-27T10:00:00.250Z")
    before = time.time()
    watcher.submitted(task, 0, "job_b", 1.0, created=None)
    server, local = watcher.running["job_a"], watcher.running["job_b"]
    assert (server.created, server.margin) == (epoch("2026-11-27T10:00:00.250Z"), SERVER_MARGIN)
    assert local.created is not None and before <= local.created <= time.time()
    assert local.margin == SKEW_MARGIN > SERVER_MARGIN


async def _never(watch: Watch, outcome: object) -> None:
    raise AssertionError("no job ends in this test")


@pytest.mark.parametrize("status", [429, 503])
async def test_a_hint_past_max_wait_holds_off_a_submit_at_once(status: int) -> None:
    """With hold_off (submits, dry runs), a 429's or a 503's Retry-After past --max-wait raises
    HeldOff on the first answer, without waiting; without it the wait is capped and retried."""
    from batchgen.core.errors import ApiError, ErrorKind, HeldOff
    from batchgen.core.retry import Retrying

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def answer() -> None:
        raise ApiError(status, "come back tomorrow", ErrorKind.TRANSIENT, retry_after=1e8)

    with pytest.raises(HeldOff, match="longer than --max-wait 5 s"):
        async for attempt in Retrying(Backoff(max_wait=5), sleep=sleep, hold_off=True):
            with attempt:
                answer()
    assert slept == []
    tries = 0
    with pytest.raises(ApiError):
        async for attempt in Retrying(Backoff(max_wait=5, attempts=3, limited=3), sleep=sleep):
            with attempt:
                tries += 1
                answer()
    assert tries == 3 and slept and max(slept) <= 5 * 1.1 + 0.05

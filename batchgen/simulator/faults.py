"""What the simulator is told to get wrong, and how often.

Each fault is a share of requests (0..1) or a limit; one seeded RNG decides, so a test
with a fixed seed sees the same faults in the same order.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Faults:
    """Fault settings; all off by default."""

    # Rate-counted requests (submits and dry runs, answered or refused alike) arriving in
    # any `rate_window` seconds, past which the arrival is answered 429: as strict as an
    # API may count, so a client's own burst shows up as a 429 here too.
    rate_limit: int | None = None
    rate_window: float = 1.0
    jitter: float = 0.0  # each API request arrives up to this many seconds late, as over a network
    action_limit: int | None = None  # jobs running at once, then 429 + details.actionLimit
    action_wait: float = 1.0  # what that 429 asks to wait, seconds (below 1 s as retry-after-ms)
    error_rate: float = 0.0  # share of API requests answered 500/503
    drop_rate: float = 0.0  # share of API requests whose connection is dropped
    failure_rate: float = 0.0  # share of jobs that end in `failure` (refunded unless no_refund)
    discount: float = 0.0  # share of each job's price taken off (creativeUnitsDiscount)
    no_refund: bool = False  # failed jobs keep their charge (billing.disableRefund: true)
    truncate_rate: float = 0.0  # share of downloads cut off halfway
    stuck_rate: float = 0.0  # share of jobs that never finish
    url_ttl: float = 3600.0  # lifetime of signed asset URLs, seconds
    expired_rate: float = 0.0  # share of asset URLs handed out already expired
    refuse_prompts: tuple[str, ...] = ()  # prompts containing one of these get a permanent 400
    ignore_range: bool = False  # answer Range requests with the whole file (200), as some CDNs do
    oversize_rate: float = 0.0  # share of downloads that run past the asset's declared size
    html_rate: float = 0.0  # share of downloads served as an HTML error page with status 200
    list_hides_input: bool = False  # GET /jobs leaves out metadata.input (GET /jobs/{id} keeps it)
    short_pages: bool = False  # GET /jobs pages hold fewer jobs than asked, some none, as the SDK allows
    upload_job: bool = False  # `complete` answers with a jobId that imports the file (an older flow)
    continuation_new_only: bool = False  # continuations answer the new audio only, not the prompt first
    fail_continuations: bool = False  # every continuation job ends in `failure` (a chain's later hops)
    # Chains: the outputs of hop `bad_hop` (1 is the first job, 2 the first continuation)
    # come back wrong `bad_hop_times` times, as `bad_hop_kind` says: rate, channels, width,
    # mp3 (MP3 after WAV), long (5 s more than asked), short (half of what was asked) or
    # undecodable (an MP3 header and nothing after).
    bad_hop: int | None = None
    bad_hop_kind: str = "rate"
    bad_hop_times: int = 1
    quota: int | None = None  # accepted submissions, then every submit is told to come back in a day (429)
    submit_delay: float = 0.0  # seconds between creating a job and answering its POST
    dry_run_delay: float = 0.0  # seconds before a dry run answers
    bandwidth: int | None = None  # CDN bytes per second per download (None: as fast as it goes)
    # How a 429 says when to come back: seconds, date, ms, body or mixed (rotate).
    retry_style: str = "mixed"
    seed: int | None = None
    rng: random.Random = field(init=False, repr=False)
    injected: Counter[str] = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self, kind: str, share: float) -> bool:
        """True (and counted) when a fault of `kind` with probability `share` happens now."""
        if share > 0 and self.rng.random() < share:
            self.injected[kind] += 1
            return True
        return False

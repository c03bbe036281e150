"""Typed journal events: valid when built, one encode/decode pair, nothing bad ever written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.core.events import (
    KINDS,
    BadEvent,
    BatchStarted,
    Deferred,
    Done,
    Event,
    Failed,
    HopDone,
    HopUnusable,
    Intent,
    JobFailed,
    Kept,
    Progress,
    Submitted,
    Succeeded,
    Uploaded,
    Withdrawn,
    decode,
    encode,
)
from batchgen.store.journal import journal_path
from batchgen.store.ledger import Ledger

FILE = {"path": "a.wav", "bytes": 10, "sha256": "ab" * 32}
EXAMPLES: list[Event] = [
    BatchStarted(v=1, batch="b", base_seed=7, version="0.3.0"),
    Uploaded(sha256="0" * 64, asset_id="asset_1", path="in.wav"),
    Intent(task="a", hop=2, hops=3, digest="d", attempt=4),
    Submitted(task="a", hop=2, job_id="job_1", cost=2.5, adopted=True, discount=0.5, cost_details={"gen": 2.5}),
    Withdrawn(task="a", hop=2),
    Succeeded(task="a", hop=2, job_id="job_1", asset_ids=("asset_2",), cost=2.5),
    JobFailed(task="a", job_id="job_1", reason="boom", refunded=False, cost=1.0),
    HopDone(task="a", hop=2, file={**FILE, "path": ".batchgen/hops/a.h2.wav"}),
    HopUnusable(task="a", hop=2, job_id="job_1", reason="too short"),
    Done(task="a", files=(FILE,), digest="d", sidecar={**FILE, "path": "a.json"}, cost=3.0, job_id="job_1"),
    Failed(task="a", reason="gave up", permanent=True, attempt=4),
    Deferred(task="a", reason="download failed"),
    Progress(task="a"),
    Kept(
        task="a",
        state={
            "digest": "d",
            "hops": [{"status": "done", "job_id": "job_1", "asset_ids": ["asset_2"], "cost": 2.5, "file": FILE}],
            "outcome": "done",
            "job_ids": ["job_0", "job_1"],
            "charges": {"job_0": 1.0, "job_1": 2.5},
            "kept": 1.0,
            "files": [FILE],
            "sidecar": {**FILE, "path": "a.json"},
        },
    ),
]


def test_every_kind_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(KINDS.values())


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind)
def test_encode_then_decode_gives_the_event_back(event: Event) -> None:
    line = encode(event, t=12.5, n=3)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = json.loads(line)
    assert (doc["ev"], doc["t"], doc["n"]) == (event.kind, 12.5, 3)
    assert decode(doc) == (event, 12.5, 3)


def test_a_line_is_written_as_0_2_0_wrote_it() -> None:
    line = encode(Submitted(task="a", hop=1, job_id="job_1", cost=1.0), t=1.0, n=5)
    assert line == b'{"ev":"submitted","t":1.0,"task":"a","hop":1,"job_id":"job_1","cost":1.0,"n":5}\n'


def test_decode_ignores_fields_it_does_not_know() -> None:
    doc = {"ev": "withdrawn", "task": "a", "hop": 1, "from_the_future": [1, 2]}
    assert decode(doc).event == Withdrawn(task="a", hop=1)


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"ev": "nope", "task": "a"}, "unknown event"),
        ({"ev": "submitted", "task": "a"}, "job_id missing"),
        ({"ev": "submitted", "task": "a", "job_id": "../etc"}, "job_id"),
        ({"ev": "submitted", "task": "a", "job_id": "job_1", "cost": -1}, "cost"),
        ({"ev": "submitted", "task": "a", "job_id": "job_1", "cost": True}, "cost"),
        ({"ev": "submitted", "task": "a", "job_id": "job_1", "hop": 0}, "hop"),
        ({"ev": "intent", "task": "a", "digest": "d", "hop": 3, "hops": 2}, "hop is beyond hops"),
        ({"ev": "intent", "task": ".hidden", "digest": "d"}, "task name"),
        ({"ev": "succeeded", "task": "a", "job_id": "job_1", "asset_ids": "asset_1"}, "asset_ids"),
        ({"ev": "done", "task": "a", "files": []}, "files"),
        ({"ev": "done", "task": "a", "files": [{**FILE, "path": "../x.wav"}]}, "path"),
        ({"ev": "job_failed", "task": "a", "job_id": "job_1", "refunded": "no"}, "refunded"),
        ({"ev": "batch", "v": 0}, "v"),
        ({"ev": "upload", "sha256": "xyz", "asset_id": "asset_1"}, "sha256"),
        ([1, 2], "not an event"),
    ],
)
def test_a_bad_field_is_named(doc: object, says: str) -> None:
    with pytest.raises(BadEvent, match=says):
        decode(doc)


def test_text_is_bounded_when_built() -> None:
    assert len(Failed(task="a", reason="x" * 10_000).reason) == 2000


def test_a_bad_event_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "b")
    ledger.record(Intent(task="a", hop=1, hops=2, digest="d", attempt=1))
    before = journal_path(tmp_path).read_bytes()
    with pytest.raises(BadEvent, match="job_id"):
        ledger.record(Submitted(task="a", hop=1, job_id="has space"))
    with pytest.raises(BadEvent, match="beyond the task's 2"):
        ledger.record(Withdrawn(task="a", hop=3))  # valid alone, but the task has two hops
    ledger.close()
    assert journal_path(tmp_path).read_bytes() == before
    state = Ledger.read(tmp_path, "b").state("a")
    assert state is not None and state.hops[0].status == "submitting" and state.attempts == 1

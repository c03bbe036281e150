"""`batchgen serve`: a live listening room that follows a run, and marks that are saved and kept."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from batchgen import load
from batchgen.listen import report
from batchgen.listen.picks import DROPPED, Made, change, update
from batchgen.listen.picks import load as load_picks
from batchgen.listen.room import Room
from batchgen.listen.serve import serve
from batchgen.simulator import Simulator, SimulatorThread

from ..browser import Browser, find_chromium
from ..conftest import KEY, SECRET, Served
from ..helpers import ROOT, env_for, eventually, fast, requires, run, start

MANIFEST = """\
batch: room
seed: 5
defaults: {duration: 2}
tracks:
  - {name: calm, prompt: "calm forest <script>alert('x')</script>, 70 bpm", takes: 2}
  - {name: battle, prompt: "epic battle, 140 bpm", takes: 2}
  - {name: sting, prompt: "victory sting, 120 bpm"}
"""


@dataclass
class Live:
    url: str
    token: str
    room: Room
    stop: asyncio.Event


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "room.yaml"
    path.write_text(MANIFEST)
    return path


@pytest.fixture
async def live(manifest: Path, tmp_path: Path) -> AsyncIterator[Live]:
    """`serve` in the test's loop on a free port, before any run (no batch folder yet).

    A run in the same loop saves and restores the signal handlers serve installed, so the
    process's own handlers are put back afterwards (real runs and servers are two processes)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    room = Room(load(manifest), tmp_path / "out")
    stop = asyncio.Event()
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(room, "127.0.0.1", 0, url.set_result, stop))
    async with asyncio.timeout(10):
        await url
    async with aiohttp.ClientSession() as session, session.get(url.result()) as resp:
        token = re.search(r'batchgen-token content="([^"]+)"', await resp.text())
    assert token is not None
    yield Live(url.result(), token.group(1), room, stop)
    stop.set()
    await task
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


async def post(live: Live, body: object, **headers: str) -> tuple[int, dict]:
    sent = {"Content-Type": "application/json", "X-Batchgen-Token": live.token, **headers}
    async with (
        aiohttp.ClientSession() as session,
        session.post(live.url + "api/mark", data=json.dumps(body), headers=sent) as resp,
    ):
        return resp.status, await resp.json()


async def state(live: Live, since: int = 0) -> dict:
    async with aiohttp.ClientSession() as session, session.get(f"{live.url}api/state?since={since}") as resp:
        return await resp.json()


async def wait_done(live: Live, count: int) -> dict:
    """Poll the room as the page does until `count` takes have a player."""
    seen: list[dict] = []

    async def players() -> bool:
        seen.append(await state(live))
        return sum("<audio" in html for html in seen[-1]["takes"].values()) >= count

    await eventually(players)
    return seen[-1]


async def test_the_room_follows_a_run_and_keeps_one_pick_per_track(
    served: Served, live: Live, manifest: Path, tmp_path: Path
) -> None:
    """Takes appear as the run makes them; a pick un-picks the track's other take; marks are
    saved to picks.json as they are made and come back after a restart."""
    before = await state(live)
    assert len(before["takes"]) == 5 and not any("<audio" in h for h in before["takes"].values())
    await run(served, manifest, fast(tmp_path / "out"))
    after = await wait_done(live, 5)
    assert after["rev"] > before["rev"] and "5 of 5 done" in after["summary"]
    assert set((await state(live, after["rev"]))["takes"]) == set()  # nothing new since

    status, answer = await post(live, {"take": "calm-t1", "action": "pick"})
    assert status == 200 and answer["marks"]["calm-t1"]["state"] == "picked"
    status, answer = await post(live, {"take": "calm-t2", "action": "pick"})
    assert answer["marks"] == {"calm-t2": {"state": "picked", "note": ""}, "calm-t1": {"state": None, "note": ""}}
    await post(live, {"take": "battle-t1", "action": "reject"})
    await post(live, {"take": "battle-t1", "action": "note", "note": "too busy <b>here</b>\x07"})
    folder = tmp_path / "out" / "room"
    saved = json.loads((folder / "picks.json").read_text())["takes"]
    assert saved["calm-t2"]["state"] == "picked" and saved["calm-t1"]["state"] is None
    assert saved["battle-t1"] == {**saved["battle-t1"], "state": "rejected", "note": "too busy <b>here</b>"}
    assert not list(folder.glob("*.part"))

    again = Room(load(manifest), tmp_path / "out")  # a restart: the marks are read back
    again.take(again.read())
    page = again.page("t")
    assert re.search(r'<figure class="take done picked" data-take="calm-t2"', page)
    assert re.search(r'<figure class="take done rejected" data-take="battle-t1"', page)
    assert "too busy &lt;b&gt;here&lt;/b&gt;" in page and "<b>here</b>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page and "<script>alert" not in page


async def test_multi_pick_keeps_every_pick(served: Served, manifest: Path, tmp_path: Path) -> None:
    """With --multi-pick, picking a second take of a track leaves the first picked."""
    await run(served, manifest, fast(tmp_path / "out"))
    room = Room(load(manifest), tmp_path / "out", multi=True)
    room.take(room.read())
    room.mark({"take": "calm-t1", "action": "pick"}, 1.0)
    room.mark({"take": "calm-t2", "action": "pick"}, 2.0)
    assert load_picks(tmp_path / "out" / "room", "room").picked() == ["calm-t1", "calm-t2"]
    room.mark({"take": "sting", "action": "note", "note": "keep for the trailer"}, 3.0)
    # The static page written after a run (or by `report`) shows the marks, read-only.
    page = report.build(load(manifest), tmp_path / "out").read_text()
    assert len(re.findall(r'<figure class="take done picked"', page)) == 2
    assert "<p class=note>keep for the trailer</p>" in page
    assert "<meta name=batchgen-token" not in page and "<button type=button data-act=" not in page
    assert "<textarea" not in page


async def test_writes_need_the_token_this_host_and_a_real_take(
    served: Served, live: Live, manifest: Path, tmp_path: Path
) -> None:
    """A POST without the page's token, from another origin or naming another Host is refused;
    so are unknown takes, picks of takes not done, bad bodies; files are the done takes' only."""
    await run(served, manifest, fast(tmp_path / "out"))
    await wait_done(live, 5)
    body = {"take": "calm-t1", "action": "pick"}
    assert (await post(live, body, **{"X-Batchgen-Token": ""}))[0] == 403
    wrong = live.token[:-1] + ("B" if live.token.endswith("A") else "A")  # one character off, never the same
    assert (await post(live, body, **{"X-Batchgen-Token": wrong}))[0] == 403
    assert (await post(live, body, Origin="http://evil.example"))[0] == 403
    assert (await post(live, body, Host="evil.example"))[0] == 421
    assert (await post(live, {"take": "nope", "action": "pick"}))[0] == 404
    assert (await post(live, {"take": "calm-t1", "action": "steal"}))[0] == 400
    assert (await post(live, {"take": "calm-t1", "action": "note", "note": "x" * 100_000}))[0] in (400, 413)
    assert not (tmp_path / "out" / "room" / "picks.json").exists()  # nothing was written by any of them
    async with aiohttp.ClientSession() as session:
        sent = {"Content-Type": "application/json", "X-Batchgen-Token": live.token}
        for bad in ("{", "[" * 20_000 + "]" * 20_000, "[1, 2]"):  # broken, nested past any parser, not an object
            async with session.post(live.url + "api/mark", data=bad, headers=sent) as resp:
                assert resp.status == 400, bad[:10]
        async with session.get(live.url + "calm-t1.wav", headers={"Range": "bytes=0-99"}) as resp:
            assert resp.status == 206 and len(await resp.read()) == 100
        for name in ("calm-t1.json", ".batchgen%2Fstate.jsonl", "..%2F..%2Fetc%2Fpasswd", "picks.json"):
            async with session.get(live.url + name) as resp:
                assert resp.status == 404, name
        target = tmp_path / "secret.wav"
        target.write_bytes(b"RIFF")
        wav = tmp_path / "out" / "room" / "sting.wav"
        wav.unlink()
        wav.symlink_to(target)
        async with session.get(live.url + "sting.wav") as resp:
            assert resp.status == 404  # a listed name that became a symlink is not followed
        async with session.get(live.url, headers={"Host": "rebound.example:80"}) as resp:
            assert resp.status == 421  # DNS rebinding: the page (and its token) is not served


async def test_a_take_made_again_loses_its_pick_with_a_note(served: Served, manifest: Path, tmp_path: Path) -> None:
    """A pick describes a file: when a rerun makes the take again (new prompt), the pick is dropped
    and the note says why; notes and other picks stay."""
    await run(served, manifest, fast(tmp_path / "out"))
    room = Room(load(manifest), tmp_path / "out")
    room.take(room.read())
    room.mark({"take": "sting", "action": "pick"}, 1.0)
    room.mark({"take": "sting", "action": "note", "note": "great ending"}, 1.0)
    room.mark({"take": "calm-t1", "action": "pick"}, 1.0)
    manifest.write_text(MANIFEST.replace("victory sting, 120 bpm", "victory sting, 132 bpm"))
    await run(served, manifest, fast(tmp_path / "out"))
    room = Room(load(manifest), tmp_path / "out")
    room.take(room.read())
    picks = load_picks(tmp_path / "out" / "room", "room")
    assert picks.picked() == ["calm-t1"]
    assert picks.marks["sting"].note == f"great ending ({DROPPED} it was picked)"


async def test_two_rooms_on_one_batch_lose_no_acknowledged_mark(served: Served, manifest: Path, tmp_path: Path) -> None:
    """Two `serve`s of one batch: a mark one of them saved survives the other's next write,
    and the other shows it once it writes."""
    await run(served, manifest, fast(tmp_path / "out"))
    first, second = Room(load(manifest), tmp_path / "out"), Room(load(manifest), tmp_path / "out")
    for room in (first, second):
        room.take(room.read())
    first.mark({"take": "sting", "action": "pick"}, 1.0)
    first.mark({"take": "calm-t1", "action": "note", "note": "lovely"}, 1.0)
    answer = second.mark({"take": "battle-t2", "action": "reject"}, 2.0)
    picks = load_picks(tmp_path / "out" / "room", "room")
    assert picks.picked() == ["sting"] and picks.marks["battle-t2"].state == "rejected"
    assert picks.marks["calm-t1"].note == "lovely"
    assert second.state(answer["rev"] - 3)["marks"]["sting"] == {"state": "picked", "note": ""}


async def test_a_note_made_while_pending_travels_with_the_finished_take(
    served: Served, manifest: Path, tmp_path: Path
) -> None:
    """A take noted before it is made keeps its note on the page once its fragment is swapped in:
    the state that sends the new fragment sends the take's marks with it."""
    room = Room(load(manifest), tmp_path / "out")
    room.take(room.read())  # nothing made yet: every take pending
    noted = room.mark({"take": "sting", "action": "note", "note": "try it louder"}, 1.0)["rev"]
    await run(served, manifest, fast(tmp_path / "out"))
    room.take(room.read())
    state = room.state(noted)
    assert "sting" in state["takes"] and "<audio" in state["takes"]["sting"]
    assert state["marks"]["sting"] == {"state": None, "note": "try it louder"}


def test_marks_from_many_writers_at_once_all_land(tmp_path: Path) -> None:
    """picks.update under its lock: 4 writers x 25 marks at once, every one of them in the file."""
    folder = tmp_path / "b"

    def writer(k: int) -> None:
        made = Made(f"t{k}", "d", "s")
        for i in range(25):
            update(folder, "b", lambda picks, name=f"t{k}-{i}": change(picks, name, made, "reject", now=1.0))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(load_picks(folder, "b").marks) == 100


@pytest.mark.parametrize("text", ["[1, 2", "[" * 100_000 + "]" * 100_000], ids=["broken", "nested too deeply"])
def test_a_bad_picks_file_is_one_line_and_exit_2(manifest: Path, tmp_path: Path, text: str) -> None:
    """A picks.json that is not ours stops serve with one line naming it; it is never overwritten."""
    folder = tmp_path / "out" / "room"
    folder.mkdir(parents=True)
    (folder / "picks.json").write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "batchgen", "serve", str(manifest), "--out", str(tmp_path / "out"), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "picks.json" in out.stderr and "Traceback" not in out.stderr
    assert (folder / "picks.json").read_text() == text


def picked_in_file(folder: Path, names: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (folder / "picks.json").exists() and load_picks(folder, "room").picked() == names

    return check


CHROMIUM = find_chromium()


@requires(CHROMIUM, "Chromium")
async def test_serve_in_headless_chromium_during_a_run(manifest: Path, tmp_path: Path) -> None:
    """With serve running before and during a simulated run: takes appear without a reload, space
    plays the focused take, arrows move, `p` picks into picks.json, and a reload shows it picked."""
    assert CHROMIUM is not None
    out = tmp_path / "out"
    with SimulatorThread(Simulator(key=KEY, secret=SECRET, job_time=1.0)) as sim:
        server = start(["serve", str(manifest), "--out", str(out), "--port", "0"], env_for(None))
        try:
            assert server.stdout is not None
            url = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())
            assert url is not None
            async with Browser(CHROMIUM) as browser:
                await browser.open(url.group())
                await browser.eval("window.unreloaded = true")
                assert await browser.eval("document.querySelectorAll('figure.take audio').length") == 0
                runner = start(["run", str(manifest), "--out", str(out), "--rate", "20"], env_for(sim))
                players = "document.querySelectorAll('figure.take audio').length === 5"
                await eventually(lambda: browser.eval(players), 30)
                assert runner.wait(30) == 0
                assert await browser.eval("window.unreloaded") is True  # the same page, updated in place
                summary = "document.getElementById('summary').textContent.indexOf('5 of 5 done') >= 0"
                await eventually(lambda: browser.eval(summary), 10)
                await browser.eval("document.querySelector('figure.take[data-take=\"battle-t1\"]').focus()")
                await browser.press("ArrowRight")
                assert await browser.eval("document.activeElement.dataset.take") == "battle-t2"
                await browser.press(" ")
                await eventually(lambda: browser.eval("!document.activeElement.querySelector('audio').paused"), 10)
                await browser.press("p")
                await eventually(picked_in_file(out / "room", ["battle-t2"]), 10)
                await browser.open(url.group())
                picked = "document.querySelector('figure.take[data-take=\"battle-t2\"]').classList.contains('picked')"
                assert await browser.eval(picked) is True
                refused = await browser.eval(
                    "fetch('api/mark', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                    " body: JSON.stringify({take: 'calm-t1', action: 'pick'})}).then(r => r.status)"
                )
                assert refused == 403
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(15) == 0
    assert os.path.exists(out / "room" / "picks.json")

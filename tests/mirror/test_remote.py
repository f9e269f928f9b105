"""How the mirror of one remote schedules its reads of LXD (no LXD: a kind whose reads take a set time)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from app.mirror.kinds import MirrorKind
from app.mirror.remote import ADDRESS_WINDOW, RemoteMirror


def _mirror(read_seconds: float, reads: list[str]) -> RemoteMirror:
    async def load_one(client: Any, remote: str, key: str) -> dict[str, Any]:
        reads.append(key)
        await asyncio.sleep(read_seconds)
        return {"name": key, "n": len(reads)}

    async def load_all(client: Any, remote: str) -> list[tuple[str, dict[str, Any]]]:
        return []

    kind = MirrorKind(name="instances", load_all=load_all, load_one=load_one,
                      running=lambda d: d.get("status") == "Running",
                      awaits_address=lambda d: not d.get("addresses"))
    rm = RemoteMirror("r", SimpleNamespace(project="default"), [kind])  # type: ignore[arg-type]
    rm._collections("default")["instances"].loaded = True
    rm.synced = True
    return rm


async def test_a_reader_never_waits_for_more_than_the_read_under_way_and_the_next_under_steady_changes() -> None:
    reads: list[str] = []
    rm = _mirror(0.05, reads)
    coll = rm.projects["default"]["instances"]
    stop = asyncio.Event()

    async def changes() -> None:  # an event about the object every 20 ms, for as long as the test runs
        while not stop.is_set():
            rm.request("default", "instances", "c1")
            await asyncio.sleep(0.02)

    task = asyncio.create_task(changes())
    await asyncio.sleep(0.3)
    waits = []
    for _ in range(5):
        start = time.monotonic()
        assert await rm.settle(coll, "c1")
        waits.append(time.monotonic() - start)
    stop.set()
    await task
    assert max(waits) < 0.2, waits  # at most the read under way and the one after it (50 ms each), not 2 s
    assert len(reads) < 0.8 / 0.05 + 3  # requests made while a read runs share one more read
    await rm.aclose()


async def test_an_address_window_that_ran_out_is_not_opened_again_by_a_listing_until_the_next_start() -> None:
    rm = _mirror(0.0, [])
    running = {"name": "c1", "status": "Running", "addresses": []}
    rm._track_address("default", "instances", "c1", None, running)
    ident = ("default", "instances", "c1")
    assert ident in rm._addresses
    rm._addresses[ident] = time.monotonic() - 1  # the window ran out without an address
    rm._poll_addresses()
    assert ident not in rm._addresses
    rm._track_address("default", "instances", "c1", running, running)  # a reconcile sees it again: no new window
    assert ident not in rm._addresses
    stopped = {**running, "status": "Stopped"}
    rm._track_address("default", "instances", "c1", running, stopped)
    rm._track_address("default", "instances", "c1", stopped, running)  # started again: a new window
    assert rm._addresses[ident] > time.monotonic() + ADDRESS_WINDOW - 5
    await rm.aclose()


async def test_a_large_listing_hands_the_memory_its_parsing_took_back_and_a_small_one_does_not() -> None:
    from app.mirror.remote import LARGE_LOAD

    calls: list[int] = []
    size = {"n": 3}

    async def load_all(client: Any, remote: str) -> list[tuple[str, dict[str, Any]]]:
        return [(f"c{i}", {"name": f"c{i}"}) for i in range(size["n"])]

    async def load_one(client: Any, remote: str, key: str) -> dict[str, Any]:
        return {"name": key}

    kind = MirrorKind(name="instances", load_all=load_all, load_one=load_one)
    rm = RemoteMirror("r", SimpleNamespace(project="default"), [kind],  # type: ignore[arg-type]
                      after_large_load=lambda: calls.append(len(calls)))
    coll = rm._collections("default")["instances"]
    await rm._read_once("default", "instances", "*", coll)
    await asyncio.sleep(0.05)
    assert len(coll) == 3 and calls == []
    size["n"] = LARGE_LOAD
    await rm._read_once("default", "instances", "*", coll)
    await asyncio.sleep(0.1)  # it runs on a thread
    assert len(coll) == LARGE_LOAD and calls == [0]
    await rm.aclose()


async def test_a_lazy_request_of_a_collection_is_read_by_its_next_reader_or_at_once_while_watched() -> None:
    listings: list[int] = []

    async def load_all(client: Any, remote: str) -> list[tuple[str, dict[str, Any]]]:
        listings.append(len(listings))
        await asyncio.sleep(0.02)
        return [("p1", {"name": "p1", "n": len(listings)})]

    async def load_one(client: Any, remote: str, key: str) -> dict[str, Any]:
        return {"name": key}

    kind = MirrorKind(name="profiles", load_all=load_all, load_one=load_one)
    rm = RemoteMirror("r", SimpleNamespace(project="default"), [kind])  # type: ignore[arg-type]
    coll = rm._collections("default")["profiles"]
    coll.loaded = True
    rm.synced = True
    for _ in range(20):  # a burst of creates, each changing the profiles' used_by on the side
        assert rm.request("default", "profiles", "*", lazy=True) is None
    await asyncio.sleep(0.1)
    assert listings == [] and coll.stale  # nobody read the profiles: LXD was not asked
    assert await rm.settle(coll)  # the next reader has them listed once, and waits for it
    assert listings == [0] and coll.records["p1"].data["n"] == 1 and not coll.stale
    assert await rm.settle(coll) and listings == [0]

    watcher, _ = coll.watch(None)
    rm.request("default", "profiles", "*", lazy=True)  # watched: read at once, so the watcher hears of it
    await asyncio.sleep(0.1)
    assert listings == [0, 1] and not coll.stale
    watcher.close()
    await rm.aclose()

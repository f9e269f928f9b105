"""A job's result after its last LXD operation: taken from the model's read under way, or read afresh (no LXD: a
kind whose reads take a set time)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from app.mirror import Mirror
from app.mirror.kinds import MirrorKind
from app.mirror.remote import RemoteMirror

READ = 0.05


def _mirror(lxd: dict[str, str], reads: list[str]) -> tuple[Mirror, RemoteMirror]:
    """A mirror of remote "r" whose container reads take `READ` seconds and return the status `lxd` holds."""

    async def load_one(client: Any, remote: str, key: str) -> dict[str, Any]:
        reads.append(key)
        status = lxd[key]  # what LXD has when the read begins
        await asyncio.sleep(READ)
        return {"name": key, "status": status}

    async def load_all(client: Any, remote: str) -> list[tuple[str, dict[str, Any]]]:
        return []

    kind = MirrorKind(name="instances", load_all=load_all, load_one=load_one)
    rm = RemoteMirror("r", SimpleNamespace(project="default"), [kind])  # type: ignore[arg-type]
    rm._collections("default")["instances"].loaded = True
    rm.synced = True
    mirror = Mirror(lambda name: SimpleNamespace(project="default"), [kind])  # type: ignore[arg-type,return-value]
    mirror.remotes["r"] = rm
    return mirror, rm


def _running(view: dict[str, Any]) -> bool:
    return view.get("status") == "Running"


async def test_the_read_begun_on_lxds_event_serves_and_the_confirming_read_queued_after_it_is_not_waited_for() -> None:
    lxd = {"c1": "Running"}
    reads: list[str] = []
    mirror, rm = _mirror(lxd, reads)
    rm.request("default", "instances", "c1")  # the lifecycle event (instance-started): a read begins
    await asyncio.sleep(READ / 5)
    rm.request("default", "instances", "c1")  # the operation's end: one more read queued after it
    loop = asyncio.get_running_loop()
    start = loop.time()
    view = await mirror.after_change("r", "default", "instances", "c1", client=None,  # type: ignore[arg-type]
                                     since=0, shows=_running)
    took = loop.time() - start
    assert view == {"name": "c1", "status": "Running"}
    assert took < READ * 1.5, took  # the rest of the read under way, not the queued one after it too
    assert "c1" in rm.projects["default"]["instances"].pending  # the confirming read is still under way
    view["status"] = "changed by the caller"  # a copy: the model's record is not touched
    assert rm.projects["default"]["instances"].records["c1"].data["status"] == "Running"
    await rm.aclose()


async def test_a_record_that_does_not_show_the_change_yet_is_read_afresh() -> None:
    lxd = {"c1": "Stopped"}
    reads: list[str] = []
    mirror, rm = _mirror(lxd, reads)
    rm.request("default", "instances", "c1")
    await asyncio.sleep(READ * 2)  # the model holds c1 Stopped (its event was late, say)
    lxd["c1"] = "Running"  # the start has ended in LXD
    view = await mirror.after_change("r", "default", "instances", "c1", client=None,  # type: ignore[arg-type]
                                     since=0, shows=_running)
    assert view is not None and view["status"] == "Running"
    assert reads == ["c1", "c1"]
    await rm.aclose()


async def test_a_model_out_of_sync_is_not_trusted() -> None:
    lxd = {"c1": "Running"}
    reads: list[str] = []
    mirror, rm = _mirror(lxd, reads)
    rm.request("default", "instances", "c1")
    await asyncio.sleep(READ * 2)
    rm.synced = False  # the events stream dropped: what the model holds may be stale
    lxd["c1"] = "Stopped"
    view = await mirror.after_change("r", "default", "instances", "c1", client=None,  # type: ignore[arg-type]
                                     since=0, shows=lambda v: v.get("status") == "Stopped")
    assert view is not None and view["status"] == "Stopped"
    assert reads == ["c1", "c1"]
    await rm.aclose()


async def test_a_record_read_before_the_job_asked_for_its_change_is_not_its_result() -> None:
    lxd = {"c1": "Stopped"}
    reads: list[str] = []
    mirror, rm = _mirror(lxd, reads)
    rm.request("default", "instances", "c1")
    await asyncio.sleep(READ * 2)  # the model read c1 Stopped before the job began (an outside stop, say)
    since = mirror.mark("r")  # the job's stop is asked of LXD now; its event has not come
    view = await mirror.after_change("r", "default", "instances", "c1", client=None,  # type: ignore[arg-type]
                                     since=since, shows=lambda v: v.get("status") == "Stopped")
    assert view is not None and view["status"] == "Stopped"
    assert reads == ["c1", "c1"]  # the record showed the status, but from before: read afresh
    await rm.aclose()

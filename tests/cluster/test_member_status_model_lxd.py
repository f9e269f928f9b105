"""The read model follows a cluster member going offline and coming back, though LXD sends no event for either:
a container on the dead member, never read live, is served from the model with status `Error` (naming the member)
shortly after LXD marks the member offline, and `Running` again shortly after it is back online."""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI

from app.locallxd.cluster import LocalCluster
from tests.cluster.conftest import create_on

MARKED_OFFLINE_WITHIN = 5.0
BACK_WITHIN = 10.0


async def _model_read(gw: httpx.AsyncClient, name: str) -> dict[str, object]:
    r = await gw.get(f"/v1/containers/{name}")  # no Cache-Control: served by the read model
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-cache"] == "hit", (r.headers, r.text)
    return dict(r.json())


async def _until_status(gw: httpx.AsyncClient, name: str, status: str, within: float) -> tuple[dict[str, object],
                                                                                              float]:
    t0 = time.monotonic()
    while True:
        got = await _model_read(gw, name)
        took = time.monotonic() - t0
        if got["status"] == status:
            return got, took
        assert took < within, f"{name} still {got['status']} in the model {took:.1f}s later: {got}"
        await asyncio.sleep(0.2)


async def _quiet(app: FastAPI) -> None:
    """Wait until the model has no read of LXD under way or due (a read cut short by the kill would have the
    collection reloaded, and show the member's containers in error without the member's status changing)."""
    rm = app.state.mirror.remotes["cluster"]
    deadline = time.monotonic() + 10
    while any(coll.pending for colls in rm.projects.values() for coll in colls.values()) or rm._addresses \
            or rm._tasks:
        assert time.monotonic() < deadline, f"the model did not settle: {app.state.mirror.stats()}"
        await asyncio.sleep(0.02)


async def test_the_model_shows_a_dead_members_container_in_error_once_offline_and_running_once_back(
        cluster_client: httpx.AsyncClient, cluster_app: FastAPI, cluster: LocalCluster, names: str) -> None:
    gw = cluster_client
    await asyncio.gather(*(create_on(gw, f"{names}-{m}", target=m) for m in ("m1", "m3")))
    on_dead, on_live = f"{names}-m3", f"{names}-m1"
    assert (await _model_read(gw, on_dead))["status"] == "Running"
    stats = cluster_app.state.mirror.stats
    changes_before = stats()["cluster"]["member_changes"]
    await _quiet(cluster_app)
    dead = cluster.member("m3")
    dead.kill()
    try:
        offline_after = await asyncio.to_thread(cluster.wait_status, "m3", "Offline")
        shown, error_took = await _until_status(gw, on_dead, "Error", MARKED_OFFLINE_WITHIN)
        assert shown["location"] == "m3" and "'m3'" in str(shown["status_message"]), shown
        still = await _model_read(gw, on_live)
        assert still["status"] == "Running" and still["status_message"] == "", still
    finally:
        await asyncio.to_thread(dead.restart)
    online_after = await asyncio.to_thread(cluster.wait_status, "m3", "Online")
    shown, running_took = await _until_status(gw, on_dead, "Running", BACK_WITHIN)
    assert shown["status_message"] == "" and shown["location"] == "m3", shown
    after = stats()["cluster"]
    assert after["synced"] and after["member_changes"] >= changes_before + 2, after
    print(f"\nm3 marked Offline {offline_after:.1f}s after its death; the model showed Error {error_took:.1f}s "
          f"later; back Online {online_after:.1f}s after its restart; the model showed Running {running_took:.1f}s "
          f"later ({after['member_polls']} member polls, {after['member_changes']} changes)")

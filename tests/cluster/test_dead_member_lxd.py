"""A cluster member dies (SIGKILL of its daemon) under the gateway and comes back: reads of the other members'
containers stay correct and fast, the dead member's container shows `Error` and why, creates placed on it fail
naming it, and creates left to LXD succeed once LXD marks it offline; everything recovers after the restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from app.locallxd.cluster import LocalCluster
from app.lxd import Client
from tests.cluster.conftest import create_on

LIVE = {"Cache-Control": "no-cache"}


async def _timed(call: Any) -> tuple[httpx.Response, float]:
    t = time.monotonic()
    r = await call
    return r, time.monotonic() - t


async def test_a_dead_member_and_its_return(cluster_client: httpx.AsyncClient, cluster: LocalCluster, m1: Client,
                                            names: str) -> None:
    gw = cluster_client
    await asyncio.gather(*(create_on(gw, f"{names}-{m}", target=m) for m in ("m1", "m2", "m3")))
    dead = cluster.member("m3")
    dead.kill()
    try:
        # reads of the containers on the living members: correct, and fast (from the model and live)
        for headers in ({}, LIVE):
            for m in ("m1", "m2"):
                r, took = await _timed(gw.get(f"/v1/containers/{names}-{m}", headers=headers))
                assert r.status_code == 200 and took < 1.0, (r.text, took)
                assert r.json()["status"] == "Running" and r.json()["location"] == m
        r, took = await _timed(gw.get("/v1/containers", params={"prefix": names}, headers=LIVE))
        assert r.status_code == 200 and took < 2.0, (r.text, took)
        listed = {i["name"]: i for i in r.json()["items"]}
        assert [listed[f"{names}-{m}"]["status"] for m in ("m1", "m2")] == ["Running", "Running"]
        on_dead = listed[f"{names}-m3"]
        assert on_dead["status"] == "Error" and on_dead["location"] == "m3"
        assert "'m3'" in on_dead["status_message"], on_dead
        r, took = await _timed(gw.get(f"/v1/containers/{names}-m3", headers=LIVE))  # LXD itself waits 10 s
        assert r.status_code == 200 and took < 12.0, (r.text, took)
        assert r.json()["status"] == "Error" and "'m3'" in r.json()["status_message"], r.json()
        r, took = await _timed(gw.get(f"/v1/containers/{names}-m3"))  # the read model took what was read live
        assert r.headers["x-gateway-cache"] == "hit" and took < 1.0 and r.json()["status"] == "Error", r.text

        # a create placed on it, before LXD knows: the job fails at once, naming the member
        r, took = await _timed(gw.post("/v1/containers", params={"target": "m3", "wait": 10},
                                       json={"name": f"{names}-early", "image": {"alias": "busybox"}}))
        if r.status_code == 503:  # LXD already marked it offline
            assert "'m3'" in r.json()["detail"]
        else:
            job = r.json()
            assert job["status"] == "failed" and took < 5.0, (job, took)
            assert "'m3'" in job["error"]["detail"], job["error"]

        # once LXD marks it offline: refused before any job, naming it; creates left to LXD go elsewhere
        offline_after = cluster.wait_status("m3", "Offline")
        members = {m["name"]: m for m in (await gw.get("/v1/cluster/members")).json()["items"]}
        assert members["m3"]["status"] == "Offline" and members["m1"]["status"] == "Online"
        jobs_before = len((await gw.get("/v1/jobs")).json()["items"])
        r = await gw.post("/v1/containers", params={"target": "m3"},
                          json={"name": f"{names}-late", "image": {"alias": "busybox"}})
        assert r.status_code == 503 and r.json()["type"].endswith("/member-unavailable"), r.text
        assert "'m3'" in r.json()["detail"]
        assert len((await gw.get("/v1/jobs")).json()["items"]) == jobs_before
        job = await create_on(gw, f"{names}-anywhere")
        assert job["status"] == "succeeded" and job["result"]["location"] in ("m1", "m2"), job
        r = await gw.post("/v1/containers", params={"target": "m9"},
                          json={"name": f"{names}-nowhere", "image": {"alias": "busybox"}})
        assert r.status_code == 404 and r.json()["type"].endswith("/member-not-found"), r.text
    finally:
        dead.restart()
    cluster.wait_status("m3", "Online")

    # back: its container runs again, the gateway sees it, and creates placed on it work
    deadline = time.monotonic() + 20
    while True:
        r = await gw.get(f"/v1/containers/{names}-m3", headers=LIVE)
        if r.status_code == 200 and r.json()["status"] == "Running":
            break
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.5)
    assert r.json()["status_message"] == ""
    job = await create_on(gw, f"{names}-back", target="m3")
    assert job["status"] == "succeeded" and job["result"]["location"] == "m3", job
    print(f"\nm3 was marked offline {offline_after:.1f}s into the wait")

"""A clustered remote configured with several member URLs: when the member the gateway talks to dies, the gateway
moves to the next one (reads, creates and the read model's events), and nothing needs restarting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.locallxd.cluster import LocalCluster
from app.main import create_app
from app.settings import Settings
from tests.cluster.conftest import create_on
from tests.support.app import model_in_sync
from tests.support.lxd_cluster import cluster_remote

LIVE = {"Cache-Control": "no-cache"}


@pytest.fixture
async def gw(tmp_path: Path, cluster: LocalCluster) -> AsyncIterator[httpx.AsyncClient]:
    info = cluster.info
    assert info is not None
    remote = cluster_remote(info, member="m2", default=True, urls=[info.member("m3").url, info.member("m1").url])
    app = create_app(Settings(_env_file=None, remotes=[remote], data_dir=tmp_path / "data",  # type: ignore[call-arg]
                              auth_enabled=False))
    async with LifespanManager(app):
        await model_in_sync(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     timeout=60) as c:
            yield c


async def test_the_gateway_moves_to_another_member_when_its_member_dies(gw: httpx.AsyncClient,
                                                                         cluster: LocalCluster, names: str) -> None:
    await create_on(gw, f"{names}-a", target="m1")
    assert (await gw.get("/v1/server")).json()["name"] == "m2"
    talked_to = cluster.member("m2")
    talked_to.kill()
    t0 = time.monotonic()
    try:
        r = await gw.get(f"/v1/containers/{names}-a", headers=LIVE)
        moved_in = time.monotonic() - t0
        assert r.status_code == 200 and r.json()["status"] == "Running", r.text
        assert (await gw.get("/v1/server")).json()["name"] == "m3"
        job = await create_on(gw, f"{names}-b", target="m1")
        assert job["status"] == "succeeded", job
        # the read model follows the events of the new member: a change made behind the gateway's back shows
        r = await gw.post(f"/v1/containers/{names}-b/stop", params={"wait": 60}, json={"force": True})
        assert r.json()["status"] == "succeeded", r.text
        deadline = time.monotonic() + 10
        while (await gw.get(f"/v1/containers/{names}-b")).json()["status"] != "Stopped":
            assert time.monotonic() < deadline, "the read model did not see the stop"
            await asyncio.sleep(0.2)
        listed = (await gw.get("/v1/containers", params={"prefix": names})).json()["items"]
        assert sorted(i["name"] for i in listed) == [f"{names}-a", f"{names}-b"]
    finally:
        talked_to.restart()
    assert moved_in < 5, moved_in
    cluster.wait_status("m2", "Online")

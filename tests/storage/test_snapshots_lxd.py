"""/v1/storage-pools/{pool}/volumes/{volume}/snapshots against the real private LXD: list, the jobs
`volume-snapshot.create`, `volume-snapshot.restore` (a file of a mounted volume gets its old content back) and
`volume-snapshot.delete`, and the refusals (404, 409, 422)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from tests.containers.support import create, job_ends, remove_all, unique

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


POOL = "default"


@pytest.fixture
async def volume(client: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> AsyncIterator[str]:
    name = unique("lgw-vs")
    r = await client.post(f"/v1/storage-pools/{POOL}/volumes", json={"name": name})
    assert r.status_code == 201, r.text
    yield name
    await remove_all(lxd_daemon.socket_path, name)
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        if name in {v.name for v in await lxd.storage.volumes(POOL, vtype="custom")}:
            for s in await lxd.storage.volume_snapshots(POOL, name):
                await lxd.storage.delete_volume_snapshot(POOL, name, s.name)
            await lxd.storage.delete_volume(POOL, name)


async def run(client: httpx.AsyncClient, container: str, script: str) -> str:
    r = await client.post(f"/v1/containers/{container}/exec", json={"command": ["sh", "-c", script]},
                          params={"wait": 60})
    job = await job_ends(client, r)
    assert job["status"] == "succeeded" and job["result"]["exit_code"] == 0, job
    return str(job["result"]["stdout"])


async def names(client: httpx.AsyncClient, volume: str) -> list[str]:
    r = await client.get(f"/v1/storage-pools/{POOL}/volumes/{volume}/snapshots")
    assert r.status_code == 200, r.text
    return [s["name"] for s in r.json()["items"]]


async def test_a_restore_brings_back_the_old_content_of_a_file(client: httpx.AsyncClient, volume: str) -> None:
    snaps = f"/v1/storage-pools/{POOL}/volumes/{volume}/snapshots"
    container = f"{volume}-ct"
    await create(client, container)
    r = await client.post(f"/v1/containers/{container}/devices",
                          json={"name": "data", "device": {"type": "disk", "pool": POOL, "source": volume,
                                                           "path": "/mnt/data"}})
    assert r.status_code == 201, r.text
    await run(client, container, "echo before > /mnt/data/note")

    r = await client.post(snaps, json={"name": "s1"}, params={"wait": 60})
    job = await job_ends(client, r)
    assert job["status"] == "succeeded" and job["kind"] == "volume-snapshot.create", job
    assert job["result"] == {"pool": POOL, "volume": volume, "name": "s1"}
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    listed = (await client.get(snaps)).json()["items"]
    assert [s["name"] for s in listed] == ["s1"] and listed[0]["created_at"], listed

    await run(client, container, "echo after > /mnt/data/note")
    job = await job_ends(client, await client.post(f"{snaps}/s1/restore", params={"wait": 60}))
    assert job["status"] == "failed", job  # LXD restores no volume a running instance uses
    assert await run(client, container, "cat /mnt/data/note") == "after\n"
    r = await client.post(f"/v1/containers/{container}/stop", json={"timeout": 5, "force": True},
                          params={"wait": 60})
    assert (await job_ends(client, r))["status"] == "succeeded"
    r = await client.post(f"{snaps}/s1/restore", params={"wait": 60})
    job = await job_ends(client, r)
    assert job["status"] == "succeeded" and job["kind"] == "volume-snapshot.restore", job
    assert job["result"] == {"pool": POOL, "volume": volume, "restored": "s1"}
    r = await client.post(f"/v1/containers/{container}/start", json={"timeout": 5}, params={"wait": 60})
    assert (await job_ends(client, r))["status"] == "succeeded"
    assert await run(client, container, "cat /mnt/data/note") == "before\n"

    r = await client.delete(f"{snaps}/s1", params={"wait": 60})
    job = await job_ends(client, r)
    assert job["status"] == "succeeded" and job["kind"] == "volume-snapshot.delete", job
    assert await names(client, volume) == []


async def test_snapshot_refusals(client: httpx.AsyncClient, volume: str) -> None:
    snaps = f"/v1/storage-pools/{POOL}/volumes/{volume}/snapshots"
    assert await names(client, volume) == []
    for body in ({"name": "-bad"}, {"name": "a/b"}, {}, {"name": "ok", "stateful": True}):
        r = await client.post(snaps, json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.post(f"{snaps}/-bad/restore")).status_code == 422

    r = await client.post(snaps, json={"name": "s1"}, params={"wait": 60})
    assert (await job_ends(client, r))["status"] == "succeeded"
    r = await client.post(snaps, json={"name": "s1"})
    assert r.status_code == 409 and r.json()["type"].endswith("/snapshot-exists"), r.text

    for method, path in [("GET", f"/v1/storage-pools/{POOL}/volumes/lgw-none/snapshots"),
                         ("GET", f"/v1/storage-pools/lgw-none/volumes/{volume}/snapshots"),
                         ("POST", f"/v1/storage-pools/{POOL}/volumes/lgw-none/snapshots"),
                         ("POST", f"{snaps}/nope/restore"), ("DELETE", f"{snaps}/nope")]:
        r = await client.request(method, path, json={"name": "s2"} if path.endswith("snapshots") else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert await names(client, volume) == ["s1"]

    r = await client.delete(f"{snaps}/s1", params={"wait": 60})
    assert (await job_ends(client, r))["status"] == "succeeded"
    assert (await client.delete(f"{snaps}/s1")).status_code == 404

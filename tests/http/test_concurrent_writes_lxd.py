"""Concurrent writers against the real private LXD: merge patches without `If-Match` all land (the gateway
writes under LXD's ETag and re-reads and re-merges when it changed), and parallel creates of one name make one
job and answer the others 409 at once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from tests.containers.support import IMAGE, remove_all

WRITERS = 20


@pytest.fixture
async def lxd(lxd_daemon: DaemonInfo) -> AsyncIterator[Client]:
    async with Client.unix(lxd_daemon.socket_path) as c:
        yield c


async def test_parallel_container_patches_without_if_match_all_land(client: httpx.AsyncClient, lxd: Client,
                                                                    lxd_daemon: DaemonInfo) -> None:
    name = f"lgw-cw{secrets.token_hex(3)}"
    try:
        await lxd.instances.create(name, image=lxd_daemon.image_alias)
        answers = await asyncio.gather(*(client.patch(f"/v1/containers/{name}", json={"config": {f"user.k{i}": str(i)}})
                                         for i in range(WRITERS)))
        assert [r.status_code for r in answers] == [200] * WRITERS, [r.text for r in answers if r.status_code != 200]
        config = (await lxd.instances.get(name)).config
        assert {k: v for k, v in config.items() if k.startswith("user.k")} == {
            f"user.k{i}": str(i) for i in range(WRITERS)}
    finally:
        await remove_all(lxd_daemon.socket_path, name)


async def test_parallel_profile_patches_without_if_match_all_land(client: httpx.AsyncClient, lxd: Client) -> None:
    name = f"lgw-pw{secrets.token_hex(3)}"
    try:
        assert (await client.post("/v1/profiles", json={"name": name})).status_code == 201
        answers = await asyncio.gather(*(client.patch(f"/v1/profiles/{name}", json={"config": {f"user.k{i}": str(i)}})
                                         for i in range(WRITERS)))
        assert [r.status_code for r in answers] == [200] * WRITERS, [r.text for r in answers if r.status_code != 200]
        config = (await lxd.profiles.get(name)).config
        assert {k: v for k, v in config.items() if k.startswith("user.k")} == {
            f"user.k{i}": str(i) for i in range(WRITERS)}
    finally:
        if name in await lxd.profiles.names():
            await lxd.profiles.delete(name)


async def test_a_stale_if_match_is_still_412(client: httpx.AsyncClient, lxd: Client,
                                             lxd_daemon: DaemonInfo) -> None:
    name = f"lgw-cw{secrets.token_hex(3)}"
    try:
        await lxd.instances.create(name, image=lxd_daemon.image_alias)
        etag = (await client.get(f"/v1/containers/{name}")).headers["ETag"]
        assert (await client.patch(f"/v1/containers/{name}", json={"config": {"user.a": "1"}},
                                   headers={"If-Match": etag})).status_code == 200
        r = await client.patch(f"/v1/containers/{name}", json={"config": {"user.b": "1"}}, headers={"If-Match": etag})
        assert r.status_code == 412, r.text
        assert "user.b" not in (await lxd.instances.get(name)).config
    finally:
        await remove_all(lxd_daemon.socket_path, name)


async def test_parallel_creates_of_one_name_make_one_job_and_409_the_rest(client: httpx.AsyncClient, lxd: Client,
                                                                          lxd_daemon: DaemonInfo) -> None:
    name = f"lgw-cc{secrets.token_hex(3)}"
    try:
        answers = await asyncio.gather(*(client.post("/v1/containers", json={"name": name, "image": IMAGE})
                                         for _ in range(50)))
        started = [r for r in answers if r.status_code == 202]
        refused = [r for r in answers if r.status_code == 409]
        assert len(started) == 1 and len(refused) == 49, sorted(r.status_code for r in answers)
        for r in refused:
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["type"].endswith("/container-exists") and name in r.json()["detail"]
        job = (await client.get(started[0].headers["Location"], params={"wait": 120})).json()
        assert job["status"] == "succeeded", job
        jobs = (await client.get("/v1/jobs", params={"limit": 1000})).json()["items"]
        assert [j["id"] for j in jobs if j.get("resource") == f"/v1/containers/{name}"] == [job["id"]]
        assert name in await lxd.instances.names()
        # once the job has ended the name is free again for the name check of LXD itself: 409 "exists"
        r = await client.post("/v1/containers", json={"name": name, "image": IMAGE})
        assert r.status_code == 409 and r.json()["type"].endswith("/container-exists")
    finally:
        await remove_all(lxd_daemon.socket_path, name)


async def test_parallel_server_config_patches_without_if_match_all_land(client: httpx.AsyncClient,
                                                                        lxd: Client) -> None:
    keys = [f"user.lgw-k{i}" for i in range(WRITERS)]
    try:
        answers = await asyncio.gather(*(client.patch("/v1/server/config", json={"config": {k: "1"}})
                                         for k in keys))
        assert [r.status_code for r in answers] == [200] * WRITERS, [r.text for r in answers if r.status_code != 200]
        config = (await lxd.config.get()).config
        assert {k for k in config if k.startswith("user.lgw-k")} == set(keys)
    finally:
        await client.patch("/v1/server/config", json={"config": dict.fromkeys(keys)})

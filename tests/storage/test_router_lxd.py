"""/v1/storage-pools against the real private LXD: pools (list, create, delete) and custom volumes."""

from __future__ import annotations

import secrets

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


async def test_pools_and_volumes(client: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> None:
    pool, volume = f"lgw-{secrets.token_hex(3)}", "lgw-vol"
    try:
        r = await client.get("/v1/storage-pools")
        assert r.status_code == 200 and "default" in [p["name"] for p in r.json()["items"]]
        r = await client.post("/v1/storage-pools", json={"name": pool, "driver": "dir", "config": {}})
        assert r.status_code == 201, r.text
        assert r.json()["driver"] == "dir"
        assert (await client.post("/v1/storage-pools", json={"name": pool, "driver": "dir"})).status_code == 409

        r = await client.post(f"/v1/storage-pools/{pool}/volumes", json={"name": volume, "config": {}})
        assert r.status_code == 201, r.text
        assert r.json()["type"] == "custom"
        assert (await client.post(f"/v1/storage-pools/{pool}/volumes", json={"name": volume})).status_code == 409
        r = await client.get(f"/v1/storage-pools/{pool}/volumes")
        assert [v["name"] for v in r.json()["items"]] == [volume]
        assert (await client.post("/v1/storage-pools/lgw-none/volumes", json={"name": "v"})).status_code == 404

        assert (await client.delete(f"/v1/storage-pools/{pool}/volumes/{volume}")).status_code == 204
        assert (await client.delete(f"/v1/storage-pools/{pool}/volumes/{volume}")).status_code == 404
        assert (await client.delete(f"/v1/storage-pools/{pool}")).status_code == 204
        assert (await client.delete(f"/v1/storage-pools/{pool}")).status_code == 404
    finally:
        async with Client.unix(lxd_daemon.socket_path) as lxd:
            if pool in {p.name for p in await lxd.storage.list()}:
                for v in await lxd.storage.volumes(pool, vtype="custom"):
                    await lxd.storage.delete_volume(pool, v.name)
                await lxd.storage.delete(pool)


@pytest.mark.parametrize("config", [{"snapshots.expiry": "lgw-unknown"}, {"size": "abc"},
                                    {"block.filesystem": "lgwfs"}])  # keys the policy lets a write token set
async def test_a_volume_with_a_config_lxd_refuses_is_400_not_502(client: httpx.AsyncClient, lxd_daemon: DaemonInfo,
                                                                 config: dict[str, str]) -> None:
    volume = f"lgw-v{secrets.token_hex(3)}"
    r = await client.post("/v1/storage-pools/default/volumes", json={"name": volume, "config": config})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert next(iter(config)) in r.json()["lxd_error"]
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        assert volume not in {v.name for v in await lxd.storage.volumes("default")}

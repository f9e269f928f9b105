"""/v1/profiles against the real private LXD: CRUD with ETag and If-Match, merge-patch, 409 in use, NICs,
ensure-storage, verify-network (a profile with a NIC, and one without: the bridge is created, non-NAT)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.locallxd.daemon import DaemonInfo, pick_subnet
from app.lxd.client import Client
from app.main import create_app
from tests.support.app import make_settings

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


def _name() -> str:
    return f"lgw-p{secrets.token_hex(3)}"


@pytest.fixture
async def lxd(lxd_daemon: DaemonInfo) -> AsyncIterator[Client]:
    async with Client.unix(lxd_daemon.socket_path) as c:
        yield c


async def _cleanup(lxd: Client, *names: str) -> None:
    existing = set(await lxd.profiles.names())
    for n in names:
        if n in existing:
            await lxd.profiles.delete(n)


async def test_profile_crud_with_etag_and_merge_patch(client: httpx.AsyncClient, lxd: Client) -> None:
    name = _name()
    try:
        r = await client.post("/v1/profiles", json={"name": name, "description": "d",
                                                    "config": {"user.a": "1", "user.b": "2"},
                                                    "devices": {"data": {"type": "disk", "path": "/mnt",
                                                                         "source": "/tmp"}}})
        # a host disk is refused by the default policy
        assert r.status_code == 403, r.text
        assert r.json()["type"].endswith("/policy")
        r = await client.post("/v1/profiles", json={"name": name, "description": "d",
                                                    "config": {"user.a": "1", "user.b": "2"}})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == f"/v1/profiles/{name}"
        assert (await client.post("/v1/profiles", json={"name": name})).status_code == 409

        listed = (await client.get("/v1/profiles", params={"limit": 1000})).json()
        assert name in [p["name"] for p in listed["items"]] and listed["next_cursor"] is None

        r = await client.get(f"/v1/profiles/{name}")
        assert r.status_code == 200 and r.json()["config"] == {"user.a": "1", "user.b": "2"}
        etag = r.headers["etag"]

        r = await client.put(f"/v1/profiles/{name}", json={"config": {"user.c": "3"}},
                             headers={"If-Match": '"stale"'})
        assert r.status_code == 412 and r.headers["content-type"] == "application/problem+json"
        r = await client.put(f"/v1/profiles/{name}", json={"description": "e", "config": {"user.a": "1",
                                                                                          "user.b": "2"}},
                             headers={"If-Match": etag})
        assert r.status_code == 200, r.text
        assert r.json()["description"] == "e" and r.headers["etag"] != etag

        r = await client.patch(f"/v1/profiles/{name}", json={"config": {"user.a": None, "user.c": "3"}},
                               headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
        assert r.json()["config"] == {"user.b": "2", "user.c": "3"} and r.json()["description"] == "e"
        r = await client.patch(f"/v1/profiles/{name}", json={"config": {"security.privileged": "true"}})
        assert r.status_code == 403 and r.json()["key"] == "security.privileged"

        assert (await client.get("/v1/profiles/lgw-nope")).status_code == 404
        assert (await client.delete(f"/v1/profiles/{name}")).status_code == 204
        assert (await client.get(f"/v1/profiles/{name}")).status_code == 404
    finally:
        await _cleanup(lxd, name)


async def test_deleting_a_profile_in_use_is_409(client: httpx.AsyncClient, lxd: Client,
                                                lxd_daemon: DaemonInfo) -> None:
    name, instance = _name(), f"lgw-i{secrets.token_hex(3)}"
    try:
        assert (await client.post("/v1/profiles", json={"name": name})).status_code == 201
        await lxd.instances.create(instance, image=lxd_daemon.image_alias, profiles=["default", name])
        r = await client.delete(f"/v1/profiles/{name}")
        assert r.status_code == 409 and r.json()["type"].endswith("/in-use")
    finally:
        await lxd.instances.delete(instance)
        await _cleanup(lxd, name)


async def test_nics_ensure_storage_and_verify_network(client: httpx.AsyncClient, lxd: Client,
                                                     lxd_daemon: DaemonInfo) -> None:
    r = await client.get("/v1/profiles/default/nics")
    assert r.status_code == 200, r.text
    nics = r.json()["items"]
    assert [n["name"] for n in nics] == ["eth0"] and nics[0]["hwaddr"].startswith("00:16:3e:")

    r = await client.post("/v1/profiles/default/verify-network")
    assert r.status_code == 200, r.text
    assert r.json() == {"bridge": lxd_daemon.bridge, "created_bridge": False, "added_nic": None}

    name = _name()
    try:
        assert (await client.post("/v1/profiles", json={"name": name})).status_code == 201
        r = await client.post(f"/v1/profiles/{name}/ensure-storage")
        assert r.status_code == 200 and r.json() == {"changed": True, "pool": "default"}
        r = await client.post(f"/v1/profiles/{name}/ensure-storage")
        assert r.json() == {"changed": False, "pool": None}
        assert (await client.get(f"/v1/profiles/{name}")).json()["devices"]["root"]["pool"] == "default"
    finally:
        await _cleanup(lxd, name)
    assert (await client.post("/v1/profiles/lgw-nope/ensure-storage")).status_code == 404


async def test_verify_network_gives_a_profile_without_nic_a_bridge(tmp_path: Path, lxd_daemon: DaemonInfo,
                                                                   lxd: Client) -> None:
    bridge, name = f"lgw{secrets.token_hex(4)}", _name()
    config = {"ipv4.address": pick_subnet(), "ipv4.firewall": "false", "ipv6.firewall": "false"}
    app = create_app(make_settings(tmp_path, lxd_daemon, bridge_name=bridge, bridge_nat=False, bridge_config=config))
    try:
        async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                           base_url="http://gw") as c:
            assert (await c.post("/v1/profiles", json={"name": name})).status_code == 201
            r = await c.post(f"/v1/profiles/{name}/verify-network")
            assert r.status_code == 200, r.text
            assert r.json() == {"bridge": bridge, "created_bridge": True, "added_nic": "eth0"}
            net = await lxd.networks.get(bridge)
            assert net.config["ipv4.nat"] == "false"
            nics = (await c.get(f"/v1/profiles/{name}/nics")).json()["items"]
            assert nics[0]["device"]["parent"] == bridge
    finally:
        await _cleanup(lxd, name)
        if bridge in {n.name for n in await lxd.networks.list()}:
            await lxd.networks.delete(bridge)


async def test_replacing_the_default_profile_in_use_without_its_root_disk_is_409(
        client: httpx.AsyncClient, lxd: Client, lxd_daemon: DaemonInfo) -> None:
    instance = f"lgw-i{secrets.token_hex(3)}"
    before = (await client.get("/v1/profiles/default")).json()
    try:
        await lxd.instances.create(instance, image=lxd_daemon.image_alias)
        r = await client.put("/v1/profiles/default", json={"description": before["description"],
                                                           "config": before["config"], "devices": {}})
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "relies on" in r.json()["lxd_error"]
        r = await client.patch("/v1/profiles/default", json={"devices": {"root": None}})
        assert r.status_code == 409, r.text
        assert (await client.get("/v1/profiles/default")).json()["devices"] == before["devices"]
    finally:
        await lxd.instances.delete(instance)

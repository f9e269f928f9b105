"""/v1/networks against the real private LXD: list, create (non-NAT, `lgw` names), ensure-ipv4, delete."""

from __future__ import annotations

import secrets

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo, pick_subnet
from app.lxd.client import Client

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


QUIET = {"ipv6.address": "none", "ipv4.nat": "false", "ipv4.firewall": "false", "ipv6.firewall": "false"}


async def test_network_list_create_ensure_ipv4_delete(client: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> None:
    name = f"lgw{secrets.token_hex(4)}"
    try:
        r = await client.get("/v1/networks")
        assert r.status_code == 200 and lxd_daemon.bridge in [n["name"] for n in r.json()["items"]]
        r = await client.post("/v1/networks", json={"name": name, "type": "bridge",
                                                    "config": {**QUIET, "ipv4.address": "none"}})
        assert r.status_code == 201, r.text
        assert r.json()["config"]["ipv4.address"] == "none"
        assert (await client.post("/v1/networks", json={"name": name, "config": QUIET})).status_code == 409
        assert (await client.post("/v1/networks", json={"name": "x" * 16})).status_code == 422

        subnet = pick_subnet()
        r = await client.post(f"/v1/networks/{name}/ensure-ipv4", json={"nat": False, "address": subnet})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True
        assert r.json()["network"]["config"]["ipv4.address"] == subnet
        assert r.json()["network"]["config"]["ipv4.nat"] == "false"
        r = await client.post(f"/v1/networks/{name}/ensure-ipv4", json={"nat": False, "address": pick_subnet()})
        assert r.json()["changed"] is False

        assert (await client.delete(f"/v1/networks/{name}")).status_code == 204
        assert (await client.delete(f"/v1/networks/{name}")).status_code == 404
        assert (await client.post(f"/v1/networks/{name}/ensure-ipv4", json={})).status_code == 404
    finally:
        async with Client.unix(lxd_daemon.socket_path) as lxd:
            if name in {n.name for n in await lxd.networks.list()}:
                await lxd.networks.delete(name)

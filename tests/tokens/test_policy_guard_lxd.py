"""Each policy rule: what it covers is refused on every guarded route with a 403 naming the key, unless the token
allows the rule."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings

# (rule, config, devices, the key the problem names)
CASES: list[tuple[str, dict[str, str], dict[str, dict[str, str]], str]] = [
    ("security.privileged", {"security.privileged": "true"}, {}, "security.privileged"),
    ("security.nesting", {"security.nesting": "true"}, {}, "security.nesting"),
    ("raw", {"raw.lxc": "lxc.apparmor.profile=unconfined"}, {}, "raw.lxc"),
    ("linux.kernel_modules", {"linux.kernel_modules": "br_netfilter"}, {}, "linux.kernel_modules"),
    ("disk.host-source", {}, {"hostfs": {"type": "disk", "source": "/etc", "path": "/mnt"}},
     "devices.hostfs.source"),
    ("device.unix-char", {}, {"kvm": {"type": "unix-char", "path": "/dev/kvm"}}, "devices.kvm"),
    ("device.unix-block", {}, {"sda": {"type": "unix-block", "path": "/dev/sda"}}, "devices.sda"),
    ("device.usb", {}, {"u": {"type": "usb"}}, "devices.u"),
    ("device.gpu", {}, {"g": {"type": "gpu"}}, "devices.g"),
    ("device.pci", {}, {"p": {"type": "pci", "address": "0000:00:1f.0"}}, "devices.p"),
    ("device.proxy", {}, {"px": {"type": "proxy", "listen": "tcp:127.0.0.1:9999",
                                 "connect": "unix:/var/lib/lxd/unix.socket", "bind": "container"}}, "devices.px"),
    ("device.unix-hotplug", {}, {"hp": {"type": "unix-hotplug", "vendorid": "1d6b"}}, "devices.hp"),
    ("device.tpm", {}, {"t": {"type": "tpm", "path": "/dev/tpm0"}}, "devices.t"),
    ("nic.physical", {}, {"eth9": {"type": "nic", "nictype": "physical", "parent": "eth0"}}, "devices.eth9.nictype"),
    ("device.disk", {}, {"d": {"type": "disk", "pool": "default", "path": "/d", "shift": "true"}}, "devices.d.shift"),
    ("security.syscalls.intercept.mknod", {"security.syscalls.intercept.mknod": "true"}, {},
     "security.syscalls.intercept.mknod"),
    ("security.idmap.*", {"security.idmap.base": "0"}, {}, "security.idmap.base"),
    ("linux.sysctl.*", {"linux.sysctl.net.ipv4.ip_forward": "1"}, {}, "linux.sysctl.net.ipv4.ip_forward"),
]


@pytest.fixture
async def guarded(tmp_path: Path, lxd_daemon: DaemonInfo) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings(tmp_path, lxd_daemon, auth_enabled=True, rate_limit=""))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        yield app, c


def _refused(r: httpx.Response, key: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["type"].endswith("/policy") and body["key"] == key, body
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("rule", "config", "devices", "key"), CASES, ids=[c[0] for c in CASES])
async def test_rule_refused_on_every_guarded_route(guarded: tuple[FastAPI, httpx.AsyncClient], rule: str,
                                                   config: dict[str, str], devices: dict[str, Any],
                                                   key: str) -> None:
    app, c = guarded
    _, secret = app.state.tokens.create(f"w-{uuid.uuid4().hex[:6]}", [Scope.write])
    h = {"Authorization": f"Bearer {secret}"}
    name = f"p-{uuid.uuid4().hex[:8]}"
    _refused(await c.post("/v1/containers", headers=h,
                          json={"name": name, "image": {"alias": "busybox"}, "config": config, "devices": devices}),
             key)
    # The target of patch and device add need not exist: the guard answers first.
    _refused(await c.patch(f"/v1/containers/{name}", headers=h, json={"config": config, "devices": devices}), key)
    if devices:
        dev_name, device = next(iter(devices.items()))
        _refused(await c.post(f"/v1/containers/{name}/devices", headers=h, json={"name": dev_name, "device": device}),
                 key)
    _refused(await c.post("/v1/profiles", headers=h, json={"name": name, "config": config, "devices": devices}), key)
    assert (await c.post("/v1/profiles", headers=h, json={"name": name})).status_code == 201
    try:
        _refused(await c.put(f"/v1/profiles/{name}", headers=h, json={"config": config, "devices": devices}), key)
        _refused(await c.patch(f"/v1/profiles/{name}", headers=h, json={"config": config, "devices": devices}), key)
        # A token whose policy allows the rule passes the guard (LXD itself may still refuse, e.g. a missing device).
        _, allowed = app.state.tokens.create(f"a-{uuid.uuid4().hex[:6]}", [Scope.write], allow=[rule])
        r = await c.patch(f"/v1/profiles/{name}", headers={"Authorization": f"Bearer {allowed}"},
                          json={"config": config, "devices": devices})
        assert r.status_code != 403 or r.json()["type"].endswith("/lxd-forbidden"), r.text
    finally:
        await c.delete(f"/v1/profiles/{name}", headers=h)


async def test_allowed_nesting_creates_a_real_container(guarded: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = guarded
    _, secret = app.state.tokens.create("nester", [Scope.write], allow=["security.nesting"])
    h = {"Authorization": f"Bearer {secret}"}
    name = f"n-{uuid.uuid4().hex[:8]}"
    r = await c.post("/v1/containers", headers=h, params={"wait": 120},
                     json={"name": name, "image": {"alias": "busybox"}, "config": {"security.nesting": "true"}})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    got = (await c.get(f"/v1/containers/{name}", headers=h)).json()
    assert got["config"]["security.nesting"] == "true"
    assert (await c.delete(f"/v1/containers/{name}", headers=h, params={"wait": 60})).json()["status"] == "succeeded"


async def test_operator_default_policy_allows_for_everyone(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    app = create_app(make_settings(tmp_path, lxd_daemon, policy_allow=["raw"]))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        name = f"o-{uuid.uuid4().hex[:8]}"
        r = await c.post("/v1/profiles", json={"name": name, "config": {"raw.idmap": "both 1000 1000"}})
        assert r.status_code == 201, r.text
        assert (await c.delete(f"/v1/profiles/{name}")).status_code == 204
        _refused(await c.post("/v1/profiles", json={"name": name, "config": {"security.privileged": "1"}}),
                 "security.privileged")


async def test_the_networks_a_burst_keeps_follow_a_network_deleted_behind_the_gateways_back(
        tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    import asyncio
    import contextlib

    from app.lxd import Client, LXDError
    from tests.containers.support import counting, remove_all

    net = f"gwt{uuid.uuid4().hex[:6]}"
    prefix = f"gwn-{uuid.uuid4().hex[:6]}"
    nic = {"eth1": {"type": "nic", "network": net}}
    app = create_app(make_settings(tmp_path, lxd_daemon, rate_limit=""))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c, \
            Client.unix(lxd_daemon.socket_path) as lxd:  # behind the gateway's back

        async def create(name: str) -> httpx.Response:
            return await c.post("/v1/containers", params={"wait": 60}, json={
                "name": name, "image": {"alias": "busybox"}, "devices": nic, "start": False})

        await lxd.networks.create(net, config={"ipv4.address": "none", "ipv6.address": "none"})
        try:
            assert (await create(f"{prefix}-a")).status_code == 200  # the gateway's events stream comes up
            await asyncio.sleep(1.2)  # and settles
            async with counting(app.state.remotes.get("local")) as log:
                for name in (f"{prefix}-b", f"{prefix}-c"):
                    r = await create(name)
                    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            assert log.calls.count(("GET", "/1.0/networks")) == 1, log.calls  # kept for the burst
            await remove_all(lxd_daemon.socket_path, prefix)
            await lxd.networks.delete(net)
            r = await create(f"{prefix}-d")
            assert r.status_code == 403 and r.json()["key"] == "devices.eth1.network", r.text
        finally:
            await remove_all(lxd_daemon.socket_path, prefix)
            with contextlib.suppress(LXDError):
                await lxd.networks.delete(net)

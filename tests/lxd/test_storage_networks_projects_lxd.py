"""Storage pools and volumes, networks and their state, projects and `project=` per client and per call."""

from __future__ import annotations

import secrets

import pytest

from app.locallxd.daemon import DaemonInfo, delete_bridge
from app.lxd import Client, Conflict, NotFound, PreconditionFailed
from tests.support.cleanup import unique


async def test_storage_pool_crud(lxd: Client) -> None:
    name = unique("pool")
    await lxd.storage.create(name, "dir", description="scratch")
    try:
        pool = await lxd.storage.get(name)
        assert pool.driver == "dir" and pool.status == "Created"
        assert pool.etag is None  # LXD 5.0 checks If-Match on pools but sends no ETag with them
        assert {"default", name} <= {p.name for p in await lxd.storage.list()}
        assert "space" in await lxd.storage.resources(name)
        await lxd.storage.patch(name, {"description": "patched"})
        with pytest.raises(PreconditionFailed):
            await lxd.storage.patch(name, {"description": "stale"}, etag="0" * 64)
        fresh = await lxd.storage.get(name)
        await lxd.storage.update(name, {"config": fresh.config, "description": "put"}, etag=fresh.etag)
        assert (await lxd.storage.get(name)).description == "put"
    finally:
        await lxd.storage.delete(name)
    with pytest.raises(NotFound):
        await lxd.storage.get(name)


async def test_volume_crud(lxd: Client, lxd_daemon: DaemonInfo) -> None:
    pool, name = lxd_daemon.pool, unique("vol")
    vol = await lxd.storage.create_volume(pool, name, config={"size": "10MB"}, description="v")
    try:
        assert vol.type == "custom" and vol.config.get("size") == "10MB" and vol.etag
        assert name in [v.name for v in await lxd.storage.volumes(pool, vtype="custom")]
        with pytest.raises(Conflict):
            await lxd.storage.create_volume(pool, name)
        await lxd.storage.patch_volume(pool, name, {"description": "patched", "config": {"user.k": "v"}},
                                       etag=vol.etag)
        with pytest.raises(PreconditionFailed):
            await lxd.storage.update_volume(pool, name, {"config": {}}, etag=vol.etag)
        await lxd.storage.rename_volume(pool, name, name + "r")
        name += "r"
        got = await lxd.storage.volume(pool, name)
        assert got.description == "patched" and got.config["user.k"] == "v"
    finally:
        await lxd.storage.delete_volume(pool, name)
    with pytest.raises(NotFound):
        await lxd.storage.volume(pool, name)


async def test_network_crud_and_state(lxd: Client, lxd_daemon: DaemonInfo) -> None:
    name = "lgw" + secrets.token_hex(4)  # the harness prefix: a killed run's bridge is cleaned up
    cfg = {"ipv4.address": "none", "ipv6.address": "none"}
    try:
        await lxd.networks.create(name, config=cfg, description="scratch")
        net = await lxd.networks.get(name)
        assert net.managed and net.type == "bridge" and net.etag
        with pytest.raises(Conflict):  # LXD 5.0: HTTP 400 "The network already exists"
            await lxd.networks.create(name, config=cfg)
        assert name in [n.name for n in await lxd.networks.list()]
        st = await lxd.networks.state(name)
        assert st.type == "broadcast" and st.mtu > 0 and st.hwaddr
        await lxd.networks.patch(name, {"description": "patched"}, etag=net.etag)
        with pytest.raises(PreconditionFailed):
            await lxd.networks.update(name, {"config": cfg}, etag=net.etag)
        assert (await lxd.networks.get(name)).description == "patched"
        harness = await lxd.networks.state(lxd_daemon.bridge)
        assert any(a.address == lxd_daemon.subnet.split("/")[0] for a in harness.addresses)
        assert isinstance(await lxd.networks.leases(lxd_daemon.bridge), list)
        await lxd.networks.delete(name)
        with pytest.raises(NotFound):
            await lxd.networks.get(name)
    finally:
        delete_bridge(name)


async def test_projects_per_client_and_per_call(lxd: Client) -> None:
    proj, prof = unique("prj"), unique("p")
    created = await lxd.projects.create(proj, description="scratch")
    assert created.config.get("features.profiles") == "true"
    in_proj = lxd.with_project(proj)
    try:
        assert in_proj.transport is lxd.transport and in_proj.project == proj and lxd.project == "default"
        assert proj in [p.name for p in await lxd.projects.list()] and proj in await lxd.projects.names()
        await in_proj.profiles.create(prof, description="in project")
        assert prof in await in_proj.profiles.names()
        assert prof not in await lxd.profiles.names()
        assert prof in await lxd.profiles.names(project=proj)  # per call
        await lxd.profiles.patch(prof, {"description": "per call"}, project=proj)
        assert (await in_proj.profiles.get(prof)).description == "per call"
        p = await lxd.projects.get(proj)
        await lxd.projects.patch(proj, {"description": "patched"}, etag=p.etag)
        assert (await lxd.projects.get(proj)).description == "patched"
        assert "resources" in await lxd.projects.state(proj)
        await in_proj.aclose()  # a no-op: the parent owns the connections
        assert (await lxd.server.info()).auth == "trusted"
    finally:
        await lxd.profiles.delete(prof, project=proj)
        await lxd.projects.delete(proj)
    assert proj not in await lxd.projects.names()


async def test_project_client_events_follow_operations_in_its_project(lxd: Client) -> None:
    proj = unique("prj")
    await lxd.projects.create(proj, config={"features.images": "false", "features.profiles": "false"})
    in_proj = lxd.with_project(proj)
    name = unique("c")
    try:
        op = await in_proj.instances.create(name, image="busybox")
        assert op.done and name in await in_proj.instances.names()
        assert name not in await lxd.instances.names()
        assert in_proj.events.bus().project == proj
    finally:
        await in_proj.instances.delete(name)
        await lxd.projects.delete(proj)

"""Profiles (CRUD with ETag, LXD 5.0's 500 conflicts), server config (ETag), cluster on a standalone server."""

from __future__ import annotations

import pytest

from app.lxd import Client, Conflict, NotFound, PreconditionFailed
from tests.support.cleanup import remove_instance, unique


async def test_profile_crud_with_etag(lxd: Client) -> None:
    name = unique("p")
    p = await lxd.profiles.create(name, config={"limits.cpu": "1"}, description="first")
    try:
        assert p.config == {"limits.cpu": "1"} and p.etag
        assert name in await lxd.profiles.names()
        assert name in [x.name for x in await lxd.profiles.list()]
        await lxd.profiles.update(name, {**p.writable(), "description": "second"}, etag=p.etag)
        with pytest.raises(PreconditionFailed):
            await lxd.profiles.update(name, {**p.writable(), "description": "stale"}, etag=p.etag)
        p2 = await lxd.profiles.get(name)
        assert p2.description == "second" and p2.etag != p.etag
        await lxd.profiles.patch(name, {"config": {"limits.memory": "64MB"}}, etag=p2.etag)
        assert (await lxd.profiles.get(name)).config == {"limits.cpu": "1", "limits.memory": "64MB"}
        with pytest.raises(Conflict):  # LXD 5.0: HTTP 500 "The profile already exists"
            await lxd.profiles.create(name)
        await lxd.profiles.rename(name, name + "r")
        name += "r"
        assert (await lxd.profiles.get(name)).name == name
    finally:
        await lxd.profiles.delete(name)
    with pytest.raises(NotFound):
        await lxd.profiles.get(name)


async def test_profile_in_use_is_a_conflict(lxd: Client) -> None:
    name, inst = unique("p"), unique("c")
    await lxd.profiles.create(name)
    try:
        await lxd.instances.create(inst, image="busybox", profiles=["default", name])
        with pytest.raises(Conflict, match="in use"):  # LXD 5.0: HTTP 500 "Profile is currently in use"
            await lxd.profiles.delete(name)
    finally:
        await remove_instance(lxd, inst)
        await lxd.profiles.delete(name)


async def test_server_config_patch_put_with_etag(lxd: Client) -> None:
    key = "images.remote_cache_expiry"
    cfg = await lxd.config.get()
    assert cfg.etag and "core.https_address" in cfg.config
    try:
        await lxd.config.patch({key: "11"}, etag=cfg.etag)
        assert (await lxd.config.get()).config[key] == "11"
        assert (await lxd.server.info()).config[key] == "11"  # cached facts refreshed
        with pytest.raises(PreconditionFailed):
            await lxd.config.patch({key: "12"}, etag=cfg.etag)
        now = await lxd.config.get()
        await lxd.config.replace({**now.config, key: "13"}, etag=now.etag)
        assert (await lxd.config.get()).config[key] == "13"
    finally:
        await lxd.config.unset(key)
    assert key not in (await lxd.config.get()).config
    assert (await lxd.config.get()).config["core.https_address"] == cfg.config["core.https_address"]


async def test_cluster_on_a_standalone_server(lxd: Client) -> None:
    info = await lxd.cluster.info()
    assert info.enabled is False
    assert await lxd.cluster.members() == []

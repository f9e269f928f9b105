"""§16 container scenarios against the real private LXD: create and start, a failed start leaves nothing,
a cancelled create rolls back, removal of running and stopped containers, listing, config, profiles, disks."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from app.containers.addresses import Scope, container_addresses
from app.containers.listing import select
from app.containers.service import (
    ContainerCreateError,
    ContainerStartError,
    CreateCancelled,
    create_from_spec,
    remove_container,
)
from app.containers.spec import ContainerSpec
from app.containers.view import list_with_state
from app.images.search import ImageSource
from app.locallxd.daemon import DaemonInfo
from app.lxd import Client, LXDError, NotFound, PreconditionFailed
from app.lxd.models import Instance
from tests.support.lxd_clients import remove_instance, unique


def spec(name: str, **kw: object) -> ContainerSpec:
    return ContainerSpec.model_validate({"name": name, "image": {"alias": "busybox"}, **kw})


async def test_s28_create_from_spec_creates_and_starts(core_client: Client) -> None:
    name = unique("c")
    steps: list[str | None] = []

    async def progress(stage: str | None, percent: int | None, message: str | None) -> None:
        steps.append(message)

    try:
        made = await create_from_spec(core_client, spec(name, metadata={"owner": "me"}, autostart=False),
                                      progress=progress)
        assert made.container.name == name and made.container.status == "Running"
        assert made.container.config["user.owner"] == "me" and made.image.local
        assert steps[0] == "Creating container spec" and "Container started" in steps
    finally:
        await remove_instance(core_client, name)


async def test_s30_create_operation_failure_is_reported_and_leaves_nothing(core_client: Client) -> None:
    # LXD validates a disk's source when the create operation runs: the operation ends in failure.
    name = unique("c")
    bad = spec(name, devices={"data": {"type": "disk", "source": f"/nonexistent/{name}", "path": "/mnt/data"}})
    try:
        with pytest.raises(ContainerCreateError, match=r"^container creation failed: .*Missing source path"):
            await create_from_spec(core_client, bad)
        assert not await core_client.instances.exists(name)
    finally:
        await remove_instance(core_client, name)


async def test_s29_failed_start_leaves_no_container_and_raises_the_start_error(core_client: Client) -> None:
    name = unique("c")
    bad = spec(name, devices={"eth9": {"type": "nic", "nictype": "bridged", "parent": "lgwmissing0"}})
    try:
        with pytest.raises(ContainerStartError):
            await create_from_spec(core_client, bad)
        assert not await core_client.instances.exists(name)
    finally:
        await remove_instance(core_client, name)


async def test_cancelled_create_rolls_back(core_client: Client, lxd_daemon: DaemonInfo) -> None:
    name = unique("c")
    calls = []

    def cancel_after_create() -> bool:
        calls.append(1)
        return len(calls) >= 2  # the first check is before the create, the second right after it

    try:
        with pytest.raises(CreateCancelled):
            await create_from_spec(core_client, spec(name), image=ImageSource(lxd_daemon.image_fingerprint),
                                   cancel_check=cancel_after_create)
        assert not await core_client.instances.exists(name)
    finally:
        await remove_instance(core_client, name)


async def test_create_refused_by_lxd(core_client: Client) -> None:
    name = unique("c")
    with pytest.raises(LXDError, match=r"doesn.t exist"):
        await create_from_spec(core_client, spec(name, profiles=[unique("no-such-profile")]))
    assert not await core_client.instances.exists(name)


async def test_acquisition_error_is_annotated(core_client: Client) -> None:
    with pytest.raises(Exception, match=r"^acquiring LXD image: "):
        await create_from_spec(core_client, ContainerSpec.model_validate(
            {"name": unique("c"), "image": {"alias": unique("missing")}}))


async def test_s31_remove_stopped_and_running(core_client: Client) -> None:
    stopped, running = unique("c"), unique("c")
    await core_client.instances.create(stopped, image="busybox")
    await core_client.instances.create(running, image="busybox", start=True)
    try:
        for name in (stopped, running):
            await remove_container(core_client, name)
        assert not await core_client.instances.exists(stopped)
        assert not await core_client.instances.exists(running)
    finally:
        await remove_instance(core_client, stopped)
        await remove_instance(core_client, running)


async def test_remove_of_a_missing_container_fails_at_the_state_read(core_client: Client) -> None:
    with pytest.raises(NotFound):
        await remove_container(core_client, unique("gone"))


async def test_s25_s26_list_by_prefix_status_and_alive(core_client: Client) -> None:
    prefix = unique("lst") + "-"
    a, b = prefix + "a", prefix + "b"
    await core_client.instances.create(a, image="busybox", start=True)
    await core_client.instances.create(b, image="busybox")
    try:
        def names(listed: list[dict[str, Any]]) -> list[str]:
            return sorted(i["name"] for i in listed)

        listed = await list_with_state(core_client)
        assert names(select(listed, prefix, ["Running"])) == [a]
        assert names(select(listed, prefix, ["Running", "Stopped"])) == [a, b]
        assert names(select(listed, prefix, alive=True)) == [a, b]
        await core_client.instances.freeze(a)
        assert names(select(await list_with_state(core_client), prefix, alive=True)) == [b]
        assert select(listed, prefix + "zz") == []
    finally:
        await remove_instance(core_client, a)
        await remove_instance(core_client, b)


async def test_s10_s13_config_profiles_and_disks(core_client: Client) -> None:
    name, p1, p2 = unique("c"), unique("lgwp"), unique("lgwp")
    await core_client.instances.create(name, image="busybox")
    await core_client.profiles.create(p1)
    await core_client.profiles.create(p2)
    try:
        # as PATCH /v1/containers/{name} writes: the whole definition, merged, under the ETag read
        async def write(config: dict[str, str] | None = None, **changes: Any) -> Instance:
            inst = await core_client.instances.get(name)
            body = {**inst.writable(), **changes, "config": {**inst.config, **(config or {})}}
            await core_client.instances.update(name, body, etag=inst.etag)
            return await core_client.instances.get(name)

        await write(config={"user.key1": "val1"})
        c = await write(config={"user.key2": "val2"})
        assert c.config["user.key1"] == "val1" and c.config["user.key2"] == "val2"
        assert (await write(profiles=["default", p1])).profiles == ["default", p1]
        assert (await write(profiles=["default", p2])).profiles == ["default", p2]
        assert (await write(profiles=["default"])).profiles == ["default"]
        stale = await core_client.instances.get(name)
        await write(config={"user.key3": "changed"})
        with pytest.raises(PreconditionFailed):
            await core_client.instances.update(name, stale.writable(), etag=stale.etag)
    finally:
        await remove_instance(core_client, name)
        for p in (p1, p2):
            await core_client.profiles.delete(p)


async def test_s27_addresses_skip_loopback_and_link_local(core_client: Client, lxd_daemon: DaemonInfo) -> None:
    name = unique("c")
    net = ipaddress.ip_network(lxd_daemon.subnet, strict=False)
    addr = str(net.network_address + 77)
    await core_client.instances.create(name, image="busybox", start=True)
    try:
        deadline = asyncio.get_running_loop().time() + 15
        found = []
        while addr not in [a.value for a in found]:  # the container may still be bringing eth0 up
            assert asyncio.get_running_loop().time() < deadline, found
            await core_client.exec.run(name, ["ip", "link", "set", "eth0", "up"])
            await core_client.exec.run(name, ["ip", "addr", "add", f"{addr}/{net.prefixlen}", "dev", "eth0"])
            found = container_addresses(await core_client.instances.state(name))
            if addr not in [a.value for a in found]:
                await asyncio.sleep(0.2)
        assert all(a.scope not in (Scope.LINK_LOCAL, Scope.MACHINE_LOCAL) for a in found)
        assert all(a.interface != "lo" for a in found)
        state = await core_client.instances.state(name)
        assert container_addresses(state, skip_interfaces=["eth0"]) == []
    finally:
        await remove_instance(core_client, name)

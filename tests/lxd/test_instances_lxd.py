"""Instances, snapshots, operations and events against the real LXD, over every transport."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client, Conflict, NotFound, OperationFailed, PreconditionFailed
from tests.support.cleanup import remove_instance, unique


async def test_server_facts(client: Client) -> None:
    info = await client.server_info()
    assert info.environment.server == "lxd" and info.api_version == "1.0"
    assert await client.server.backend() == "lxd"
    assert (await client.server.version()).startswith("5.")
    assert await client.server.has_extension("instances")
    assert not await client.server.has_extension("no_such_extension")
    assert "x86_64" in await client.server.architectures()
    assert await client.server.clustered() is False
    assert "BEGIN CERTIFICATE" in await client.server.certificate()
    assert await client.server.header_prefix() == "X-LXD-"
    assert await client.server.trusted()


async def test_lifecycle_etag_rename_snapshots(client: Client, fresh: str) -> None:
    inst = await client.instances.get(fresh)
    assert inst.status == "Stopped" and inst.etag
    with pytest.raises(Conflict):
        await client.instances.create(fresh, image="busybox")
    await client.instances.patch(fresh, {"config": {"user.a": "1"}}, etag=inst.etag)
    with pytest.raises(PreconditionFailed):
        await client.instances.patch(fresh, {"config": {"user.b": "2"}}, etag=inst.etag)
    inst = await client.instances.get(fresh)
    assert inst.config["user.a"] == "1"
    body = inst.writable()
    body["description"] = "replaced"
    await client.instances.update(fresh, body, etag=inst.etag)
    assert (await client.instances.get(fresh)).description == "replaced"

    await client.instances.create_snapshot(fresh, "s0")
    await client.instances.patch(fresh, {"config": {"user.a": "2"}})
    assert [s.name for s in await client.instances.snapshots(fresh)] == ["s0"]
    await client.instances.restore_snapshot(fresh, "s0")
    assert (await client.instances.get(fresh)).config["user.a"] == "1"
    await client.instances.delete_snapshot(fresh, "s0")
    assert await client.instances.snapshots(fresh) == []

    new = unique("ren")
    await client.instances.rename(fresh, new)
    try:
        assert await client.instances.exists(new) and not await client.instances.exists(fresh)
        await client.instances.start(new)
        state = await client.instances.state(new)
        assert state.status == "Running" and state.pid > 0
        await client.instances.freeze(new)
        assert (await client.instances.state(new)).status == "Frozen"
        await client.instances.unfreeze(new)
        t0 = time.monotonic()
        await client.instances.stop(new, timeout=20)  # graceful: the image's init exits on SIGPWR
        assert time.monotonic() - t0 < 10
        assert (await client.instances.state(new)).status == "Stopped"
        await client.instances.delete(new)
        with pytest.raises(NotFound):
            await client.instances.get(new)
    finally:
        await remove_instance(client, new)


async def test_create_empty_and_copy_and_list(client: Client, fresh: str) -> None:
    empty, copy = unique("none"), unique("copy")
    try:
        await client.instances.create(empty)
        await client.instances.create(copy, copy_from=fresh, config={"user.copy": "yes"})
        names = {i.name for i in await client.instances.list()}
        assert {empty, copy, fresh} <= names
        assert {empty, copy, fresh} <= set(await client.instances.names())
        full = await client.instances.list(recursion=2, filter=f"name eq {copy}")
        assert [i.name for i in full] == [copy] and full[0].state is not None and full[0].state.status
        everywhere = await client.instances.list(all_projects=True)
        assert copy in {i.name for i in everywhere}
    finally:
        await remove_instance(client, empty)
        await remove_instance(client, copy)


async def test_start_failure_is_an_operation_error(client: Client, fresh: str) -> None:
    await client.instances.start(fresh)
    with pytest.raises(OperationFailed) as info:
        await client.instances.start(fresh)
    assert info.value.operation_id and "running" in info.value.error.lower()


async def test_graceful_stop_falls_back_to_force(client: Client, fresh: str) -> None:
    await client.instances.start(fresh)
    # make init ignore SIGPWR so the graceful stop cannot succeed
    await client.files.put(fresh, "/sbin/init", b"#!/bin/sh\ntrap '' PWR TERM INT\nwhile :; do sleep 1; done\n",
                           mode=0o755)
    await client.instances.restart(fresh, force=True)
    t0 = time.monotonic()
    await client.instances.stop(fresh, timeout=1)
    assert (await client.instances.state(fresh)).status == "Stopped"
    assert time.monotonic() - t0 < 15


async def test_lifecycle_events_and_operations(client: Client, fresh: str) -> None:
    async with client.events.subscribe({"lifecycle"}) as sub:
        op = await client.instances.start(fresh, wait=False)
        assert not op.done or op.state.status_code == 200
        listed = {o.id for o in await client.operations.list()}
        got = await client.operations.get(op.id)
        assert got.id == op.id and (op.id in listed or got.final)
        await op.wait(30)
        deadline = time.monotonic() + 10
        actions = set()
        while "instance-started" not in actions:
            ev = await sub.get(timeout=max(0.1, deadline - time.monotonic()))
            if ev.metadata.get("source", "").endswith(f"/{fresh}"):
                actions.add(ev.metadata.get("action"))


async def test_create_from_remote_image_server(client: Client, image_server: DaemonInfo) -> None:
    name = unique("remote")
    with open(image_server.server_cert) as f:
        cert = f.read()
    try:
        await client.instances.create(name, image=image_server.image_alias, server=image_server.https_url,
                                      protocol="lxd", certificate=cert, timeout=120)
        assert (await client.instances.get(name)).status == "Stopped"
    finally:
        await remove_instance(client, name)


async def test_twenty_concurrent_launches_share_one_events_connection(lxd_daemon: DaemonInfo) -> None:
    names = [unique("par") for _ in range(20)]
    async with Client.unix(lxd_daemon.socket_path) as c:
        try:
            t0 = time.monotonic()
            await asyncio.gather(*(c.instances.create(n, image="busybox", start=True) for n in names))
            elapsed = time.monotonic() - t0
            states = await asyncio.gather(*(c.instances.state(n) for n in names))
            assert all(s.status == "Running" for s in states)
            assert c.events.connection_count == 1
            print(f"20 concurrent create+start: {elapsed:.1f}s")
        finally:
            await asyncio.gather(*(remove_instance(c, n) for n in names))

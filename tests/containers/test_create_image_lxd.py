"""Creates in a row through ASGI against the real private LXD: the image a local alias names is read for each
create (a burst keeps only the image's description), so an alias moved behind the gateway's back is followed at
once; operations on a settled events stream are followed without reconciling reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client, LXDError
from tests.containers.support import counting, create, remove_all, unique


@pytest.fixture
async def names(lxd_daemon: DaemonInfo) -> AsyncIterator[str]:
    prefix = unique("tci")
    yield prefix
    await remove_all(lxd_daemon.socket_path, prefix)


@pytest.fixture
async def second_image(lxd_daemon: DaemonInfo) -> AsyncIterator[str]:
    """A second local image (published from a busybox container): its fingerprint."""
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        name = unique("pub")
        await lxd.instances.create(name, image="busybox")
        try:
            fingerprint = (await lxd.images.publish(name)).fingerprint  # type: ignore[union-attr]
        finally:
            await lxd.instances.delete(name)
        try:
            yield fingerprint
        finally:
            with contextlib.suppress(LXDError):
                await lxd.images.delete(fingerprint)


async def test_a_create_uses_the_image_the_alias_names_now_even_when_moved_behind_the_gateways_back(
        client: httpx.AsyncClient, app: FastAPI, lxd_daemon: DaemonInfo, second_image: str, names: str) -> None:
    first = lxd_daemon.image_fingerprint
    alias = unique("gw-img")
    image = {"alias": alias}
    async with Client.unix(lxd_daemon.socket_path) as lxd:  # not through the gateway
        await lxd.images.create_alias(alias, first)
        try:
            made = await create(client, f"{names}-a", image=image, start=False)
            assert made["result"]["image"]["fingerprint"] == first
            await asyncio.sleep(1.2)  # the gateway's events stream has settled: a burst keeps what it may
            async with counting(app.state.remotes.get("local")) as log:
                made = await create(client, f"{names}-b", image=image, start=False)
                made = await create(client, f"{names}-c", image=image, start=False)
            assert made["result"]["image"]["fingerprint"] == first
            image_reads = [p for m, p in log.calls if m == "GET" and p == f"/1.0/images/{first}"]
            operation_reads = [p for m, p in log.calls if m == "GET" and p.startswith("/1.0/operations/")]
            assert len(image_reads) <= 1 and operation_reads == [], log.calls

            await lxd.images.update_alias(alias, second_image)
            made = await create(client, f"{names}-d", image=image, start=False)
            assert made["result"]["image"]["fingerprint"] == second_image
            assert (await lxd.instances.get(f"{names}-d")).config["volatile.base_image"] == second_image
        finally:
            with contextlib.suppress(LXDError):
                await lxd.images.delete_alias(alias)

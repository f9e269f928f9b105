"""Fixtures of the cluster tests: a raw client of the cluster, unique names whose containers are removed after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.locallxd.cluster import LocalCluster
from app.lxd import Client
from tests.containers.support import unique
from tests.support.cleanup import remove_instance

MEMBERS = ["m1", "m2", "m3"]


async def create_on(c: httpx.AsyncClient, name: str, target: str | None = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"wait": 120}
    if target:
        params["target"] = target
    r = await c.post("/v1/containers", json={"name": name, "image": {"alias": "busybox"}, **extra}, params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
async def m1(cluster: LocalCluster) -> AsyncIterator[Client]:
    """A raw client of the cluster (through m1's unix socket), for checks and cleanup."""
    async with Client.unix(str(cluster.first.socket_path)) as c:
        yield c


@pytest.fixture
async def names(m1: Client) -> AsyncIterator[str]:
    prefix = unique("tcl")
    yield prefix
    for name in await m1.instances.names():
        if name.startswith(prefix):
            await remove_instance(m1, name)



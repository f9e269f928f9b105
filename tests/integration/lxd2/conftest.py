"""Fixtures for the second half of the LXD client: one unix-socket client of the main private daemon, one HTTPS
client of it (pinned by fingerprint), and a unix-socket client of the image server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from app.harness.daemon import DaemonInfo
from app.lxd import Client, LXDError


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def remove_instance(client: Client, name: str) -> None:
    with contextlib.suppress(LXDError):
        await client.instances.set_state(name, "stop", force=True)
    with contextlib.suppress(LXDError):
        await client.instances.delete(name)


@pytest.fixture(scope="session")
async def lxd(lxd_daemon: DaemonInfo) -> AsyncIterator[Client]:
    async with Client.unix(lxd_daemon.socket_path) as c:
        yield c


@pytest.fixture(scope="session")
async def lxd_https(lxd_daemon: DaemonInfo) -> AsyncIterator[Client]:
    async with Client.https(lxd_daemon.https_url, client_cert=lxd_daemon.client_cert,
                            client_key=lxd_daemon.client_key,
                            server_fingerprint=lxd_daemon.server_fingerprint) as c:
        yield c


@pytest.fixture(scope="session")
async def remote(image_server: DaemonInfo) -> AsyncIterator[Client]:
    async with Client.unix(image_server.socket_path) as c:
        yield c

"""Clients of the real private LXD over the unix socket, HTTPS pinned by certificate, and HTTPS pinned by
fingerprint; every test using `client` runs over all three."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client
from tests.integration.cleanup import remove_instance, unique

TRANSPORTS = ["unix", "https-cert", "https-fingerprint"]


def make_client(kind: str, daemon: DaemonInfo) -> Client:
    if kind == "unix":
        return Client.unix(daemon.socket_path)
    if kind == "https-cert":
        return Client.https(daemon.https_url, client_cert=daemon.client_cert, client_key=daemon.client_key,
                            server_cert=daemon.server_cert)
    return Client.https(daemon.https_url, client_cert=daemon.client_cert, client_key=daemon.client_key,
                        server_fingerprint=daemon.server_fingerprint)


@pytest.fixture(scope="session", params=TRANSPORTS)
async def client(request: pytest.FixtureRequest, lxd_daemon: DaemonInfo) -> AsyncIterator[Client]:
    async with make_client(request.param, lxd_daemon) as c:
        yield c


@pytest.fixture(scope="session")
async def running(client: Client) -> AsyncIterator[str]:
    """A running busybox container shared by the read-only exec and file tests of one transport."""
    name = unique("run")
    await client.instances.create(name, image="busybox", start=True)
    try:
        yield name
    finally:
        await remove_instance(client, name)


@pytest.fixture
async def fresh(client: Client) -> AsyncIterator[str]:
    """A stopped busybox container of the test's own, removed afterwards."""
    name = unique("tmp")
    await client.instances.create(name, image="busybox")
    try:
        yield name
    finally:
        await remove_instance(client, name)

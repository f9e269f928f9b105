"""Clients of the real private LXD: `client` over the unix socket, HTTPS pinned by certificate, and HTTPS pinned
by fingerprint (every test using it runs over all three); `lxd` over the unix socket and `lxd_https` pinned by
fingerprint, one of each per session; `remote`, a unix-socket client of the image server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client
from tests.support.cleanup import remove_instance, unique

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

"""Fixtures for the second half of the LXD client: one unix-socket client of the main private daemon, one HTTPS
client of it (pinned by fingerprint), and a unix-socket client of the image server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client
from tests.integration.cleanup import remove_instance, unique  # noqa: F401 - re-exported to the tests here


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

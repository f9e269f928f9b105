"""The client's tests run against a real gateway process (`python -m app`, authentication on) in front of the private
LXD, with the image server as its image source `mirror`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from app.locallxd.daemon import DaemonInfo
from app.store.tokens import Scope, TokenStore
from tests.client.support import PREFIX, Gateway
from tests.containers.support import remove_all
from tests.support.gateway import running_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, lxd_daemon: DaemonInfo,
            image_server: DaemonInfo) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("client-gw")
    tokens = TokenStore(data / "tokens.json")
    token = tokens.create("ci", [Scope.write])[1]
    admin = tokens.create("ops", [Scope.admin])[1]
    sources = json.dumps([{"name": "mirror", "url": image_server.https_url, "protocol": image_server.backend,
                           "certificate": image_server.server_cert}])
    try:
        with running_gateway(lxd_daemon.socket_path, data, auth=True, LXDGW_IMAGE_SOURCES=sources,
                             LXDGW_SHUTDOWN_GRACE_SECONDS="1") as process:
            yield Gateway(process, token, admin)
    finally:
        asyncio.run(remove_all(lxd_daemon.socket_path, PREFIX))


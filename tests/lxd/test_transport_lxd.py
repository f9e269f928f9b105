"""Connecting: pins that do not match, unreachable daemons, no I/O before the first call."""

from __future__ import annotations

import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client, LXDUnavailable


async def test_wrong_fingerprint_is_refused(lxd_daemon: DaemonInfo) -> None:
    async with Client.https(lxd_daemon.https_url, client_cert=lxd_daemon.client_cert,
                            client_key=lxd_daemon.client_key, server_fingerprint="ab" * 32) as c:
        with pytest.raises(LXDUnavailable, match="does not match the pinned"):
            await c.server_info()
        with pytest.raises(LXDUnavailable):
            await c.instances.list()


async def test_wrong_certificate_is_refused(lxd_daemon: DaemonInfo, image_server: DaemonInfo) -> None:
    async with Client.https(lxd_daemon.https_url, client_cert=lxd_daemon.client_cert,
                            client_key=lxd_daemon.client_key, server_cert=image_server.server_cert) as c:
        with pytest.raises(LXDUnavailable, match=r"(?i)certificate"):
            await c.server_info(refresh=True)


async def test_missing_socket_is_unavailable(tmp_path: object) -> None:
    async with Client.unix(f"{tmp_path}/nope.socket") as c:
        with pytest.raises(LXDUnavailable):
            await c.server_info(refresh=True)


async def test_insecure_mode_must_be_asked_for(lxd_daemon: DaemonInfo) -> None:
    async with Client.https(lxd_daemon.https_url, client_cert=lxd_daemon.client_cert,
                            client_key=lxd_daemon.client_key) as c:  # no pin: system CAs, which do not know LXD
        with pytest.raises(LXDUnavailable):
            await c.server_info()
    async with Client.https(lxd_daemon.https_url, client_cert=lxd_daemon.client_cert,
                            client_key=lxd_daemon.client_key, insecure=True) as c:
        assert (await c.server_info()).auth == "trusted"

"""Event streams of the real LXD run only while held: a subscription that failed (LXD refuses the events of a
project it does not know) leaves no reconnect loop behind, and a stream nobody holds any more is released."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client
from app.lxd.errors import LXDError
from app.lxd.events import IDLE_LINGER
from tests.containers.support import counting
from tests.support.cleanup import unique


async def test_failed_subscription_to_an_unknown_project_leaves_no_reconnect_loop(lxd_daemon: DaemonInfo) -> None:
    project = unique("nosuch")
    async with Client.unix(lxd_daemon.socket_path) as c, counting(c) as log:
        with pytest.raises(LXDError, match="Project not found"):
            async with c.events.subscribe({"lifecycle"}, project=project, timeout=2):
                pass
        await asyncio.sleep(IDLE_LINGER + 1)
        settled = time.monotonic()
        await asyncio.sleep(3)
        assert log.events_since(settled) == [], "LXD still gets /1.0/events calls for nobody"
        assert project not in c.events.open_streams


async def test_held_stream_is_kept_and_released_after_the_last_holder(lxd_daemon: DaemonInfo) -> None:
    async with Client.unix(lxd_daemon.socket_path) as c, counting(c) as log:
        for _ in range(20):
            async with c.events.subscribe({"lifecycle"}):
                pass
        assert log.events_since(0) == ["default"], "one stream serves every subscriber in turn"
        assert c.events.open_streams == ["default"]
        await asyncio.sleep(IDLE_LINGER + 1)
        assert c.events.open_streams == []
        assert c.events.connection_count == 1  # what released streams counted is kept
        async with c.events.subscribe({"lifecycle"}):  # the next user gets a fresh stream
            assert c.events.open_streams == ["default"]

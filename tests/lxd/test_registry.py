"""Readiness checks of a remote are coalesced: a burst of probes costs LXD one call."""

from __future__ import annotations

import asyncio
from typing import Any

from app.lxd.models import ServerInfo
from app.lxd.registry import RemoteRegistry, RemoteSpec


class _CountingClient:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.server = self

    async def info(self, *args: Any, **kw: Any) -> None:  # a check reads the server's facts afresh
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.fail:
            raise OSError("connection refused")

    async def aclose(self) -> None:
        pass


async def test_burst_of_checks_is_one_call() -> None:
    reg = RemoteRegistry([RemoteSpec(name="a", url="unix:///nowhere", default=True)])
    fake = _CountingClient()
    reg._clients["a"] = fake  # type: ignore[assignment]
    results = await asyncio.gather(*(reg.check("a") for _ in range(100)))
    assert results == [None] * 100 and fake.calls == 1
    await asyncio.sleep(1.05)
    assert await reg.check("a") is None and fake.calls == 2


async def test_failure_and_timeout_are_reported() -> None:
    reg = RemoteRegistry([RemoteSpec(name="a", url="unix:///nowhere", default=True)])
    reg._clients["a"] = _CountingClient(fail=True)  # type: ignore[assignment]
    assert await reg.check("a") == "connection refused"
    slow = RemoteRegistry([RemoteSpec(name="b", url="unix:///nowhere", default=True)])
    slow._clients["b"] = _CountingClient()  # type: ignore[assignment]
    assert await slow.check("b", timeout=0.01) == "no answer within 0.01s"


async def test_a_remote_is_named_by_what_it_answered_and_before_that_by_its_address() -> None:
    reg = RemoteRegistry([RemoteSpec(name="a", url="unix:///var/lib/incus/unix.socket", default=True),
                          RemoteSpec(name="b", url="unix:///var/lib/lxd/unix.socket")])
    try:
        assert (reg.backend_title(), reg.backend_title("b")) == ("Incus", "LXD")
        info = {"api_extensions": [], "environment": {"server": "lxd", "server_version": "5.0.2"}}
        reg.get("a").server._info = ServerInfo.model_validate(info)  # it answered: LXD behind an "incus" path
        assert reg.backend_title("a") == "LXD"
    finally:
        await reg.aclose()

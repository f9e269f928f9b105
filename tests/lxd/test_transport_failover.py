"""A transport with several member URLs moves to the next one when a request cannot connect, and only then."""

from __future__ import annotations

import httpx
import pytest

from app.lxd.errors import LXDUnavailable
from app.lxd.transport import Transport

M1, M2, M3 = "https://127.9.9.1:8443", "https://127.9.9.2:8443", "https://127.9.9.3:8443"


def _members(dead: set[str], seen: list[str]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        host = f"https://{request.url.host}:{request.url.port}"
        seen.append(host)
        if host in dead:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"type": "sync", "metadata": {"member": host}})
    return httpx.MockTransport(handle)


async def test_a_request_that_cannot_connect_goes_to_the_next_member() -> None:
    seen: list[str] = []
    t = Transport(M1, fallback_urls=(M2, M3, M1 + "/"), http_transport=_members({M1, M2}, seen))
    assert t.urls == [M1, M2, M3]
    r = await t.request("POST", "/1.0/instances", json={"name": "c1"})
    assert r.json()["metadata"]["member"] == M3 and seen == [M1, M2, M3]
    assert t.base_url == M3
    seen.clear()
    await t.request("GET", "/1.0")  # it stays on the member that answered
    assert seen == [M3]
    await t.aclose()


async def test_every_member_down_is_unavailable_and_one_url_never_moves() -> None:
    seen: list[str] = []
    t = Transport(M1, fallback_urls=(M2,), http_transport=_members({M1, M2}, seen))
    with pytest.raises(LXDUnavailable):
        await t.request("GET", "/1.0")
    assert seen == [M1, M2]
    await t.aclose()
    single = Transport(M1, http_transport=_members({M1}, []))
    with pytest.raises(LXDUnavailable):
        await single.request("GET", "/1.0")
    assert single.base_url == M1 and not await single.fail_over(M1)
    await single.aclose()


async def test_a_request_sent_that_timed_out_is_not_sent_again() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.host))
        raise httpx.ReadTimeout("slow", request=request)

    t = Transport(M1, fallback_urls=(M2,), http_transport=httpx.MockTransport(handle))
    with pytest.raises(Exception, match="no answer in time"):
        await t.request("POST", "/1.0/instances", json={})
    assert seen == ["127.9.9.1"] and t.base_url == M1
    await t.aclose()


async def test_the_connections_of_a_member_moved_away_from_are_closed_after_a_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import app.lxd.transport as transport

    monkeypatch.setattr(transport, "RETIRE_GRACE", 0.05)
    t = Transport(M1, fallback_urls=(M2,), http_transport=_members({M2}, []))
    await t.request("GET", "/1.0")
    old = t._short
    assert old is not None and await t.fail_over(M1) and t.base_url == M2
    assert t._retired and not old.is_closed
    await asyncio.sleep(0.2)
    assert old.is_closed and t._retired == []
    await t.aclose()

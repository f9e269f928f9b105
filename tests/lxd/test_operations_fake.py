"""Operations, events and transport against a fake LXD: REST through httpx.MockTransport, events through a real
websocket server on a unix socket. Covers what the real LXD cannot be made to do on demand."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.lxd import Client, LXDTimeout, LXDUnavailable, NotCancellable, OperationFailed, OperationVanished
from app.lxd.transport import Transport
from tests.fakes.lxd import RUNNING, Call, FakeLXD, async_answer


def created(fake: FakeLXD, then: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> Any:
    """`POST /1.0/instances`: a new running operation (after `then(op)`, when given)."""

    async def answer(_call: Call) -> httpx.Response:
        op = fake.op(str(uuid.uuid4()), RUNNING)
        if then is not None:
            await then(op)
        return async_answer(op)

    return answer


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeLXD]:
    f = FakeLXD(str(tmp_path / "fake.sock"))
    f.on("POST", "/1.0/instances", created(f))
    async with f.serving():
        yield f


@pytest.fixture
async def client(fake: FakeLXD) -> AsyncIterator[Client]:
    async with fake.client() as c:
        yield c


async def until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_operation_followed_by_events_with_one_reconciling_get(client: Client, fake: FakeLXD) -> None:
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    task = asyncio.ensure_future(op.wait(5))
    await until(lambda: fake.gets(op.id) == 1)
    await fake.emit(fake.op(op.id, 200, **{"return": 0}))
    state = await task
    assert state.status_code == 200 and fake.gets(op.id) == 1
    assert client.events.connection_count == 1


async def test_dropped_events_stream_reconnects_and_reconciles(client: Client, fake: FakeLXD) -> None:
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    task = asyncio.ensure_future(op.wait(10))
    await until(lambda: fake.gets(op.id) == 1)
    fake.op(op.id, 200)  # finishes while the stream is down: no event will ever say so
    await fake.conns[0].close()
    state = await task
    assert state.status_code == 200
    bus = client.events.bus()
    await until(lambda: bus.connections == 2)
    assert bus.reconnects == 1 and client.events.connection_count == 2


async def test_retention_race_final_event_before_the_answer(client: Client, fake: FakeLXD) -> None:
    async def finish_and_forget(op: dict[str, Any]) -> None:
        await fake.emit(fake.op(op["id"], 200))
        await until(lambda: client.events.bus().recent(op["id"]) is not None)
        fake.gone.add(op["id"])  # LXD forgot it (5 s retention): GET now answers 404

    fake.on("POST", "/1.0/instances", created(fake, then=finish_and_forget))
    op = await client.mutate("POST", "/1.0/instances", json={}, timeout=5)
    assert op.done and op.state.status_code == 200


async def test_retention_race_404_after_a_seen_final_event(client: Client, fake: FakeLXD) -> None:
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    await fake.emit(fake.op(op.id, 400, err="disk full"))
    fake.gone.add(op.id)
    with pytest.raises(OperationFailed, match="disk full"):
        await op.wait(5)


async def test_vanished_operation_without_any_event(client: Client, fake: FakeLXD) -> None:
    fake.accept_events = False
    await fake.conns[0].close() if fake.conns else None
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    fake.gone.add(op.id)
    with pytest.raises(OperationVanished):
        await op.wait(5)


async def test_wait_polls_when_events_are_down_and_reads_error_bodies_under_200(client: Client,
                                                                               fake: FakeLXD) -> None:
    fake.accept_events = False
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    assert client.events.connection_count == 0
    timeout_body = {"type": "error", "error": "context deadline exceeded", "error_code": 500, "metadata": None}
    fake.wait_answers = [timeout_body, None]
    state = await op.wait(10)
    assert state.status_code == 200
    assert fake.count("GET", f"/1.0/operations/{op.id}/wait") == 2


async def test_failure_as_error_body_under_200_is_a_failure(client: Client, fake: FakeLXD) -> None:
    fake.accept_events = False
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    fake.op(op.id, 400, err="boom")
    fake.wait_answers = [{"type": "error", "error": "boom", "error_code": 500, "metadata": None}]
    with pytest.raises(OperationFailed, match="boom"):
        await op.wait(10)


async def test_wait_timeout(client: Client, fake: FakeLXD) -> None:
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    t0 = time.monotonic()
    with pytest.raises(LXDTimeout):
        await op.wait(0.3)
    assert time.monotonic() - t0 < 2


async def test_cancel_refused_when_not_cancellable(client: Client, fake: FakeLXD) -> None:
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    with pytest.raises(NotCancellable):
        await op.cancel()
    assert fake.count("DELETE", f"/1.0/operations/{op.id}") == 0


async def test_cancelling_the_awaiting_task_cancels_the_operation(client: Client, fake: FakeLXD) -> None:
    fake.may_cancel = True
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    task = asyncio.ensure_future(op.wait())
    await until(lambda: fake.gets(op.id) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.count("DELETE", f"/1.0/operations/{op.id}") > 0


async def test_progress_iterator(client: Client, fake: FakeLXD) -> None:
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)

    async def drive() -> None:
        await until(lambda: fake.gets(op.id) == 1)
        for pct in (10, 50, 90):
            await fake.emit(fake.op(op.id, 103, download_progress=f"rootfs: {pct}%",
                                    progress={"stage": "download", "percent": str(pct)}))
        await fake.emit(fake.op(op.id, 200))

    driver = asyncio.ensure_future(drive())
    seen = [p.percent async for p in op.progress()]
    await driver
    assert seen == [10, 50, 90] and op.done


async def test_subscription_receives_events(client: Client, fake: FakeLXD) -> None:
    async with client.events.subscribe({"operation"}) as sub:
        await fake.emit(fake.op("x1", 103))
        ev = await sub.get(timeout=5)
        assert ev.type == "operation" and ev.metadata["id"] == "x1"


# ---------------------------------------------------------------------------------------------- pools


async def test_pool_exhaustion_is_unavailable_and_long_calls_do_not_starve_short_ones(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(65536)
        await asyncio.sleep(30)

    sock = str(tmp_path / "slow.sock")
    server = await asyncio.start_unix_server(never_answer, sock)
    t = Transport("http://lxd", uds=sock, max_connections=1, max_long_connections=1, pool_timeout=0.3,
                  timeout=30)
    try:
        long_call = asyncio.ensure_future(t.request("GET", "/1.0/operations/x/wait", long=True))
        short_call = asyncio.ensure_future(t.request("GET", "/1.0"))
        await until(lambda: len(accepted) == 2)  # the long call did not take the short call's connection
        t0 = time.monotonic()
        with pytest.raises(LXDUnavailable, match="pool exhausted"):
            await t.request("GET", "/1.0/instances")
        assert time.monotonic() - t0 < 2
        for task in (long_call, short_call):
            task.cancel()
        await asyncio.gather(long_call, short_call, return_exceptions=True)
    finally:
        await t.aclose()
        for w in accepted:
            w.close()
        server.close()


async def test_an_operation_started_on_a_settled_stream_is_followed_without_any_get(client: Client,
                                                                                   fake: FakeLXD) -> None:
    bus = client.events.bus()
    bus.settle = 0.05
    assert await bus.ensure_connected()
    await asyncio.sleep(0.1)  # settled
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    task = asyncio.ensure_future(op.wait(5))
    await asyncio.sleep(0.1)
    await fake.emit(fake.op(op.id, 200, **{"return": 0}))
    assert (await task).status_code == 200
    assert fake.gets(op.id) == 0


async def test_after_a_reconnect_operations_reconcile_again_until_the_stream_settles(client: Client,
                                                                                    fake: FakeLXD) -> None:
    bus = client.events.bus()
    bus.settle = 0.5
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    await fake.emit(fake.op(op.id, 200))
    await op.wait(5)
    await asyncio.sleep(0.6)
    await fake.conns[0].close()
    await until(lambda: bus.connections == 2 and bus.connected.is_set())
    again = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    task = asyncio.ensure_future(again.wait(5))
    await until(lambda: fake.gets(again.id) == 1)  # a new connection is not trusted yet
    await fake.emit(fake.op(again.id, 200))
    assert (await task).status_code == 200


async def test_a_drop_after_the_request_brings_the_reconciling_get_back(client: Client, fake: FakeLXD) -> None:
    bus = client.events.bus()
    bus.settle = 0.05
    warm = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    await fake.emit(fake.op(warm.id, 200))
    await warm.wait(5)
    await asyncio.sleep(0.1)
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    fake.op(op.id, 200)  # finishes while the stream is down: no event will ever say so
    await fake.conns[-1].close()
    assert (await op.wait(10)).status_code == 200  # learnt by asking LXD (a GET, or a `/wait` while down)
    assert fake.gets(op.id) + fake.count("GET", f"/1.0/operations/{op.id}/wait") >= 1

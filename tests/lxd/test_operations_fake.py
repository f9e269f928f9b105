"""Operations, events and transport against a fake LXD: REST through httpx.MockTransport, events through a real
websocket server on a unix socket. Covers what the real LXD cannot be made to do on demand."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, unix_serve

from app.lxd import Client, LXDTimeout, LXDUnavailable, NotCancellable, OperationFailed, OperationVanished
from app.lxd.transport import Transport


def envelope(kind: str, metadata: Any, **kw: Any) -> dict[str, Any]:
    return {"type": kind, "status": "", "status_code": 200 if kind == "sync" else 100, "operation": "",
            "error_code": 0, "error": "", "metadata": metadata, **kw}


class FakeLXD:
    """Just enough of LXD: `GET /1.0`, `POST /1.0/instances` (async), operations, `/wait`, events."""

    def __init__(self, tmp: Path) -> None:
        self.sock = str(tmp / "fake.sock")
        self.ops: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()
        self.conns: list[ServerConnection] = []
        self.requests: list[tuple[str, str]] = []
        self.accept_events = True
        self.may_cancel = False
        self.wait_answers: list[dict[str, Any] | None] = []  # scripted `/wait` bodies (HTTP 200); None: finish
        self.on_create: Any = None

    def op(self, op_id: str, code: int, err: str = "", **md: Any) -> dict[str, Any]:
        status = {103: "Running", 200: "Success", 400: "Failure", 401: "Cancelled"}[code]
        o = {"id": op_id, "class": "task", "status": status, "status_code": code, "err": err, "metadata": md,
             "may_cancel": self.may_cancel, "resources": {"instances": ["/1.0/instances/c1"]}}
        self.ops[op_id] = o
        return o

    async def emit(self, op: dict[str, Any]) -> None:
        msg = json.dumps({"type": "operation", "timestamp": "2024-01-01T00:00:00Z", "project": "default",
                          "metadata": op})
        for c in list(self.conns):
            await c.send(msg)

    async def _ws(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        try:
            await ws.wait_closed()
        finally:
            self.conns.remove(ws)

    def _process(self, conn: ServerConnection, request: Any) -> Any:
        if not self.accept_events:
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "events down\n")
        return None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.requests.append((method, path))
        if path == "/1.0":
            return httpx.Response(200, json=envelope("sync", {"api_extensions": ["instances"],
                                                              "environment": {"server": "lxd"}}))
        if method == "POST" and path == "/1.0/instances":
            op = self.op(str(uuid.uuid4()), 103)
            if self.on_create is not None:
                await self.on_create(op)
            return httpx.Response(202, json=envelope("async", op, operation=f"/1.0/operations/{op['id']}"))
        if path.startswith("/1.0/operations/"):
            parts = path.split("/")
            op_id = parts[3]
            if op_id in self.gone or op_id not in self.ops:
                return httpx.Response(404, json={"type": "error", "error": "Operation not found",
                                                 "error_code": 404, "metadata": None})
            if method == "DELETE":
                self.ops[op_id] = self.op(op_id, 401)
                await self.emit(self.ops[op_id])
                return httpx.Response(200, json=envelope("sync", {}))
            if len(parts) == 5 and parts[4] == "wait":
                if self.wait_answers:
                    answer = self.wait_answers.pop(0)
                    if answer is None:  # finish now
                        answer = envelope("sync", self.op(op_id, 200))
                    return httpx.Response(200, json=answer)
                return httpx.Response(200, json=envelope("sync", self.ops[op_id]))
            return httpx.Response(200, json=envelope("sync", self.ops[op_id]))
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    def gets(self, op_id: str) -> int:
        return self.requests.count(("GET", f"/1.0/operations/{op_id}"))


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeLXD]:
    f = FakeLXD(tmp_path)
    async with unix_serve(f._ws, f.sock, process_request=f._process):
        yield f


@pytest.fixture
async def client(fake: FakeLXD) -> AsyncIterator[Client]:
    t = Transport("http://lxd", uds=fake.sock, http_transport=httpx.MockTransport(fake.handler))
    async with Client(t) as c:
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

    fake.on_create = finish_and_forget
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
    assert fake.requests.count(("GET", f"/1.0/operations/{op.id}/wait")) == 2


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
    assert ("DELETE", f"/1.0/operations/{op.id}") not in fake.requests


async def test_cancelling_the_awaiting_task_cancels_the_operation(client: Client, fake: FakeLXD) -> None:
    fake.may_cancel = True
    op = await client.mutate("POST", "/1.0/instances", json={}, wait=False)
    task = asyncio.ensure_future(op.wait())
    await until(lambda: fake.gets(op.id) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ("DELETE", f"/1.0/operations/{op.id}") in fake.requests


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

"""A mocked LXD for the resource modules: REST through a respx router, events through a real websocket server on
a unix socket (so operations are followed as with the real daemon)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from websockets.asyncio.server import ServerConnection, unix_serve

from app.lxd import Client
from app.lxd.transport import Transport


def sync(metadata: Any, status: int = 200, etag: str | None = None) -> httpx.Response:
    headers = {"ETag": f'"{etag}"'} if etag else None
    return httpx.Response(status, headers=headers, json={
        "type": "sync", "status": "Success", "status_code": 200, "operation": "", "error_code": 0, "error": "",
        "metadata": metadata})


def error(code: int, text: str) -> httpx.Response:
    return httpx.Response(code, json={"type": "error", "status": "", "status_code": 0, "operation": "",
                                      "error_code": code, "error": text, "metadata": None})


def op_state(op_id: str, code: int = 103, err: str = "", **metadata: Any) -> dict[str, Any]:
    status = {103: "Running", 200: "Success", 400: "Failure", 401: "Cancelled"}[code]
    return {"id": op_id, "class": "task", "description": "", "status": status, "status_code": code,
            "resources": {}, "metadata": metadata or None, "may_cancel": False, "err": err, "location": "none"}


def async_op(op_id: str, **metadata: Any) -> httpx.Response:
    return httpx.Response(202, json={
        "type": "async", "status": "Operation created", "status_code": 100, "operation": f"/1.0/operations/{op_id}",
        "error_code": 0, "error": "", "metadata": op_state(op_id, 103, **metadata)})


def server_info(server: str = "lxd", extensions: list[str] | None = None, *, auth: str = "trusted",
                clustered: bool = False) -> dict[str, Any]:
    return {"api_extensions": extensions or [], "api_version": "1.0", "auth": auth, "config": {},
            "environment": {"server": server, "server_version": "6.0" if server == "incus" else "5.0.2",
                            "server_clustered": clustered}}


class Fake:
    def __init__(self, tmp: Path) -> None:
        self.sock = str(tmp / "events.sock")
        self.router = respx.MockRouter(base_url="http://lxd", assert_all_called=False)
        self.conns: list[ServerConnection] = []

    async def emit(self, state: dict[str, Any]) -> None:
        msg = json.dumps({"type": "operation", "timestamp": "2024-01-01T00:00:00Z", "project": "default",
                          "metadata": state})
        for c in list(self.conns):
            await c.send(msg)

    async def _ws(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        try:
            await ws.wait_closed()
        finally:
            self.conns.remove(ws)


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[Fake]:
    f = Fake(tmp_path)
    async with unix_serve(f._ws, f.sock):
        yield f


@pytest.fixture
def make_fake_client(fake: Fake) -> Callable[..., Client]:
    def make(server: str = "lxd", extensions: list[str] | None = None, **kw: Any) -> Client:
        fake.router.get("/1.0").mock(return_value=sync(server_info(server, extensions, **kw)))
        t = Transport("http://lxd", uds=fake.sock, http_transport=httpx.MockTransport(fake.router.async_handler))
        return Client(t)

    return make


@pytest.fixture
async def fake_client(make_fake_client: Callable[..., Client]) -> AsyncIterator[Client]:
    async with make_fake_client() as c:
        yield c

"""A scripted fake LXD for the core services' unit tests: REST through httpx.MockTransport (every request
recorded with its query, headers and body), and an events websocket that accepts and stays quiet."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.server import ServerConnection, unix_serve

from app.lxd import Client
from app.lxd.transport import Transport

Handler = Callable[["Call"], "httpx.Response | dict[str, Any] | None"]


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def sync(metadata: Any, etag: str | None = None) -> httpx.Response:
    headers = {"ETag": f'"{etag}"'} if etag else {}
    return httpx.Response(200, headers=headers, json={"type": "sync", "status": "Success", "status_code": 200,
                                                      "metadata": metadata})


def error(message: str, code: int = 500) -> httpx.Response:
    return httpx.Response(code, json={"type": "error", "error": message, "error_code": code, "metadata": None})


def operation(status_code: int = 200, err: str = "", **metadata: Any) -> httpx.Response:
    """An async answer whose operation has already ended (`status_code` 200 success, 400 failure)."""
    op_id = str(uuid.uuid4())
    status = {200: "Success", 400: "Failure", 401: "Cancelled"}[status_code]
    op = {"id": op_id, "class": "task", "status": status, "status_code": status_code, "err": err,
          "metadata": metadata, "may_cancel": False, "resources": {}}
    return httpx.Response(202, json={"type": "async", "status": "Operation created", "status_code": 100,
                                     "operation": f"/1.0/operations/{op_id}", "metadata": op})


SERVER_INFO = {"api_extensions": ["network", "storage", "instances"], "auth": "trusted",
               "environment": {"server": "lxd", "server_version": "5.0.2", "server_name": "nuc8",
                               "server_clustered": False, "kernel_architecture": "x86_64",
                               "architectures": ["x86_64", "i686"], "certificate": ""}}


@dataclass
class FakeLXD:
    """Routes `(method, path)` to handlers; a handler answers a Response, a metadata dict (sync), or None (404)."""

    sock: str
    routes: dict[tuple[str, str], Handler | list[Handler]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    server_info: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(SERVER_INFO)))

    def on(self, method: str, path: str, *handlers: Handler | httpx.Response | dict[str, Any]) -> None:
        """Answer `method path` with the handlers in turn (the last one repeats)."""
        hs: list[Handler] = [h if callable(h) else (lambda _c, h=h: h) for h in handlers]
        self.routes[(method, path)] = hs

    def requests(self, method: str | None = None, path: str | None = None) -> list[Call]:
        return [c for c in self.calls if (method is None or c.method == method) and (path is None or c.path == path)
                and not c.path.startswith("/1.0/operations")]

    def sent(self) -> list[tuple[str, str]]:
        return [c.key for c in self.requests()]

    async def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        call = Call(request.method, request.url.path, dict(request.url.params), dict(request.headers), body)
        self.calls.append(call)
        route = self.routes.get(call.key)
        if route is None and call.key == ("GET", "/1.0"):
            return sync(self.server_info, etag="server-etag")
        if route is None:
            return error("not found", 404)
        assert isinstance(route, list)
        h = route.pop(0) if len(route) > 1 else route[0]
        answer = h(call)
        if answer is None:
            return error("not found", 404)
        if isinstance(answer, httpx.Response):
            return answer
        return sync(answer)


async def _quiet(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def fake_lxd(tmp: Path) -> AsyncIterator[tuple[FakeLXD, Client]]:
    fake = FakeLXD(str(tmp / "fake.sock"))
    async with unix_serve(_quiet, fake.sock):
        t = Transport("http://lxd", uds=fake.sock, http_transport=httpx.MockTransport(fake.handler))
        async with Client(t) as c:
            yield fake, c

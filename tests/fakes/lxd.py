"""The fake LXD of the tests, for what a real daemon cannot be made to do on demand.

REST goes through `httpx.MockTransport` (every request recorded with its query, headers and body); events go
through a real websocket server on a unix socket, so operations are followed as with the real daemon.

- routes: `on(method, path, *answers)`; an answer is an `httpx.Response`, a metadata dict (a sync answer), a
  callable taking the `Call` (it may be async) or None (404); the last one repeats.
- built in: `GET /1.0` answers `server_info`; operations registered with `op()` are served on
  `/1.0/operations/{id}` (GET, `/wait` with scripted `wait_answers`, DELETE cancels), unless forgotten (`gone`).
- events: `emit(op)` sends an `operation` event to every open stream; `accept_events = False` refuses new ones.
- status codes and the `GET /1.0` answer are LXD's; the codes come from `app.lxd.models`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.server import ServerConnection, unix_serve

from app.lxd import Client
from app.lxd.models import StatusCode
from app.lxd.transport import Transport

CREATED, RUNNING, SUCCESS, FAILURE, CANCELLED = (int(c) for c in (
    StatusCode.CREATED, StatusCode.RUNNING, StatusCode.SUCCESS, StatusCode.FAILURE, StatusCode.CANCELLED))

Answer = httpx.Response | dict[str, Any] | None
Handler = Callable[["Call"], Answer | Awaitable[Answer]]


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any
    request: httpx.Request | None = None  # the raw request (read), for what the fields above leave out

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def sync(metadata: Any, etag: str | None = None, *, status: int = 200) -> httpx.Response:
    headers = {"ETag": f'"{etag}"'} if etag else {}
    return httpx.Response(status, headers=headers, json={
        "type": "sync", "status": StatusCode(SUCCESS).label, "status_code": SUCCESS, "operation": "", "error_code": 0,
        "error": "", "metadata": metadata})


def error(message: str, code: int = 500) -> httpx.Response:
    return httpx.Response(code, json={"type": "error", "status": "", "status_code": 0, "operation": "",
                                      "error_code": code, "error": message, "metadata": None})


def op_state(op_id: str, code: int = RUNNING, err: str = "", *, may_cancel: bool = False,
             resources: dict[str, list[str]] | None = None, **metadata: Any) -> dict[str, Any]:
    """An operation as `GET /1.0/operations/{id}` shows it."""
    return {"id": op_id, "class": "task", "description": "", "status": StatusCode(code).label, "status_code": code,
            "resources": resources or {}, "metadata": metadata, "may_cancel": may_cancel, "err": err,
            "location": "none"}


def async_answer(op: dict[str, Any]) -> httpx.Response:
    """The 202 answer that starts the operation `op`."""
    return httpx.Response(202, json={
        "type": "async", "status": StatusCode(CREATED).label, "status_code": CREATED,
        "operation": f"/1.0/operations/{op['id']}", "error_code": 0, "error": "", "metadata": op})


def async_op(op_id: str, **metadata: Any) -> httpx.Response:
    """The 202 answer that starts the operation `op_id`, still running."""
    return async_answer(op_state(op_id, RUNNING, **metadata))


def operation(status_code: int = SUCCESS, err: str = "", **metadata: Any) -> httpx.Response:
    """An async answer whose operation has already ended (`status_code` SUCCESS, FAILURE or CANCELLED)."""
    return async_answer(op_state(str(uuid.uuid4()), status_code, err, **metadata))


SERVER_INFO = {"api_extensions": ["network", "storage", "instances"], "api_version": "1.0", "auth": "trusted",
               "config": {},
               "environment": {"server": "lxd", "server_version": "5.0.2", "server_name": "nuc8",
                               "server_clustered": False, "kernel_architecture": "x86_64",
                               "architectures": ["x86_64", "i686"], "certificate": ""}}


def server_info(server: str = "lxd", extensions: list[str] | None = None, *, auth: str = "trusted",
                clustered: bool = False) -> dict[str, Any]:
    """A `GET /1.0` answer of an LXD (or Incus) server with these extensions."""
    info = json.loads(json.dumps(SERVER_INFO))
    info["api_extensions"] = extensions or []
    info["auth"] = auth
    info["environment"].update(server=server, server_version="6.0" if server == "incus" else "5.0.2",
                               server_clustered=clustered)
    return info


@dataclass
class FakeLXD:
    """Routes `(method, path)` to answers, serves the operations it was told about, and streams events."""

    sock: str
    routes: dict[tuple[str, str], list[Handler]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    server_info: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(SERVER_INFO)))
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    wait_answers: list[dict[str, Any] | None] = field(default_factory=list)  # `/wait` bodies; None: finish now
    may_cancel: bool = False
    accept_events: bool = True
    conns: list[ServerConnection] = field(default_factory=list)

    # -- REST

    def on(self, method: str, path: str, *answers: Handler | httpx.Response | dict[str, Any] | None) -> None:
        """Answer `method path` with the answers in turn (the last one repeats)."""
        self.routes[(method, path)] = [a if callable(a) else (lambda _c, a=a: a) for a in answers]

    def requests(self, method: str | None = None, path: str | None = None) -> list[Call]:
        """The calls made, operations left out."""
        return [c for c in self.calls if (method is None or c.method == method) and (path is None or c.path == path)
                and not c.path.startswith("/1.0/operations")]

    def sent(self) -> list[tuple[str, str]]:
        return [c.key for c in self.requests()]

    def count(self, method: str, path: str) -> int:
        """How many `method path` calls were made, operations included."""
        return sum(1 for c in self.calls if c.key == (method, path))

    def gets(self, op_id: str) -> int:
        return self.count("GET", f"/1.0/operations/{op_id}")

    async def handler(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        try:
            body = json.loads(content) if content else None
        except (ValueError, UnicodeDecodeError):
            body = content
        call = Call(request.method, request.url.path, dict(request.url.params), dict(request.headers), body,
                    request)
        self.calls.append(call)
        route = self.routes.get(call.key)
        if route is None:
            return await self._builtin(call)
        h = route.pop(0) if len(route) > 1 else route[0]
        answer = h(call)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is None:
            return error("not found", 404)
        if isinstance(answer, httpx.Response):
            return answer
        return sync(answer)

    async def _builtin(self, call: Call) -> httpx.Response:
        if call.key == ("GET", "/1.0"):
            return sync(self.server_info, etag="server-etag")
        parts = call.path.split("/")
        if call.path.startswith("/1.0/operations/") and len(parts) in (4, 5):
            op_id = parts[3]
            if op_id in self.gone or op_id not in self.ops:
                return error("Operation not found", 404)
            if call.method == "DELETE" and len(parts) == 4:
                await self.emit(self.op(op_id, CANCELLED))
                return sync({})
            if call.method == "GET" and len(parts) == 5 and parts[4] == "wait" and self.wait_answers:
                answer = self.wait_answers.pop(0)
                if answer is None:  # finish now
                    return sync(self.op(op_id, SUCCESS))
                return httpx.Response(200, json=answer)
            if call.method == "GET":
                return sync(self.ops[op_id])
        return error("not found", 404)

    # -- operations and events

    def op(self, op_id: str, code: int, err: str = "", **metadata: Any) -> dict[str, Any]:
        """Register (or change) the operation `op_id`, served on /1.0/operations; its state."""
        state = op_state(op_id, code, err, may_cancel=self.may_cancel,
                         resources={"instances": ["/1.0/instances/c1"]}, **metadata)
        self.ops[op_id] = state
        return state

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

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeLXD]:
        """The events socket, open for the time of the block."""
        async with unix_serve(self._ws, self.sock, process_request=self._process):
            yield self

    def client(self) -> Client:
        """A client of this fake (to be used as `async with`)."""
        return Client(Transport("http://lxd", uds=self.sock, http_transport=httpx.MockTransport(self.handler)))


async def fake_lxd(tmp: Path) -> AsyncIterator[tuple[FakeLXD, Client]]:
    fake = FakeLXD(str(tmp / "fake.sock"))
    async with fake.serving(), fake.client() as c:
        yield fake, c

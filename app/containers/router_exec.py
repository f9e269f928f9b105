"""Commands in containers: `POST /v1/containers/{name}/exec` (job `container.exec`, captured output) and the
interactive websockets `/v1/containers/{name}/exec/ws` and `/v1/containers/{name}/console`.

Websocket protocol: the client's first text frame is `{command, environment, user, group, cwd, width, height,
interactive}` (the console reads only `width` and `height`); then binary frames both ways are the terminal's bytes;
text frames `{type: resize, width, height}`, `{type: signal, signal}` and `{type: eof}` (closes stdin); the server
ends with `{type: exit, exit_code}` and close code 1000. A refusal before the session starts is a text frame
`{type: error, status, detail}` and a close code of 4000 + the HTTP status it stands for (4404: no such container).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal as signals
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, WebSocket, WebSocketDisconnect, WebSocketException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.containers.router import WRITE, require_container
from app.http.auth import Principal, current_principal, require
from app.http.deps import NAME_RE, PROJECT_PATTERN, Backend, BackendDep, ContainerName, backend
from app.http.errors import ProblemError
from app.jobs import Job
from app.jobs.starter import JobStarterDep, job_responses
from app.lxd.errors import LXDError
from app.lxd.exec import OutputStream
from app.store.tokens import Scope
from app.tokens.guard import enforce_container

router = APIRouter(prefix="/v1/containers", tags=["exec"])

MAX_OUTPUT = 64 << 20
FIRST_FRAME_TIMEOUT = 30.0


class ExecBody(BaseModel):
    """A command to run to completion, its output captured."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"command": ["sh", "-c", "uname -a"], "environment": {"LANG": "C.UTF-8"}, "cwd": "/root", "timeout": 60,
         "max_output_bytes": 1048576}]})

    command: list[str] = Field(min_length=1, max_length=4096, description="argv; no shell unless you run one")
    environment: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(None, pattern=r"^/", description="working directory")
    user: int | None = Field(None, ge=0, description="uid to run as")
    group: int | None = Field(None, ge=0, description="gid to run as")
    stdin: str | None = Field(None, description="text fed to the command's standard input, then closed")
    timeout: float | None = Field(None, gt=0, le=86400, description="seconds; past it the command is killed and "
                                  "the job fails with `exec-timeout`, keeping the partial output")
    max_output_bytes: int = Field(1 << 20, ge=0, le=MAX_OUTPUT, description="bytes kept per stream; the job "
                                  "keeps at most `LXDGW_JOB_OUTPUT_MAX_BYTES` of output in all, whatever this asks; "
                                  "beyond either `truncated` is true (the job's `output` messages still carry "
                                  "everything, to the token that started it)")


class StartFrame(BaseModel):
    """The first text frame of an interactive session."""

    model_config = ConfigDict(extra="ignore")

    command: list[str] = Field(default_factory=lambda: ["/bin/sh"], min_length=1)
    environment: dict[str, str] = Field(default_factory=dict)
    user: int | None = Field(None, ge=0)
    group: int | None = Field(None, ge=0)
    cwd: str | None = None
    width: int = Field(80, ge=1, le=10000)
    height: int = Field(24, ge=1, le=10000)
    interactive: bool = True


@router.post("/{name}/exec", operation_id="containers-exec", summary="Run a command (job container.exec)",
             status_code=202, response_model=Job,
             dependencies=WRITE, responses=job_responses(401, 403, 404))
async def exec_command(name: ContainerName, body: Annotated[ExecBody, Body()], request: Request, b: BackendDep,
                       jobs: JobStarterDep) -> JSONResponse:
    """The job's result is `{exit_code, stdout, stderr, truncated}`; output also streams as `output` job messages
    while it runs. A non-zero exit is still a `succeeded` job. Cancelling the job kills the process. The command,
    its input and its output are shown only to the token that started the job and to admin tokens."""

    async def precheck() -> None:
        await require_container(b, name)
        await enforce_container(request, b, name)
        state = await b.client.instances.state(name)
        if state.status != "Running":
            raise ProblemError(409, f"container {name!r} is {state.status or 'not running'}",
                               slug="container-not-running")

    return await jobs.start("container.exec", params={"name": name, **body.model_dump()},
                            resource=f"/v1/containers/{name}", remote=b.remote, project=b.project,
                            precheck=precheck)


# ------------------------------------------------------------------------------------------------ websockets


async def ws_backend(
    websocket: WebSocket, principal: Annotated[Principal, Depends(current_principal)],
    remote: Annotated[str | None, Query()] = None,
    project: Annotated[str, Query(pattern=PROJECT_PATTERN)] = "default",
) -> Backend:
    """`Backend` for websockets: a refusal closes the handshake with 4000 + the HTTP status."""
    try:
        return await backend(websocket, principal, remote, project)
    except ProblemError as p:
        raise WebSocketException(code=4000 + p.status, reason=(p.detail or "")[:120]) from None


WsBackend = Annotated[Backend, Depends(ws_backend)]


async def _refuse(ws: WebSocket, status: int, detail: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps({"type": "error", "status": status, "detail": detail}))
        await ws.close(code=4000 + status, reason=detail[:120])


async def _first_frame(ws: WebSocket, name: str, b: Backend) -> StartFrame | None:
    """Accept, read and check the start frame; None (after closing) when the session cannot start."""
    await ws.accept()
    if not NAME_RE.match(name):
        await _refuse(ws, 422, f"not a valid container name: {name!r}")
        return None
    try:
        raw = await asyncio.wait_for(ws.receive_text(), FIRST_FRAME_TIMEOUT)
        start = StartFrame.model_validate_json(raw)
    except (TimeoutError, KeyError):
        await _refuse(ws, 400, "the first frame must be a JSON text frame {command, ...}")
        return None
    except ValidationError as exc:
        await _refuse(ws, 422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]))
        return None
    except WebSocketDisconnect:
        return None
    try:
        await require_container(b, name)
        await enforce_container(ws, b, name)
    except ProblemError as p:
        await _refuse(ws, p.status, p.detail or "")
        return None
    return start


def _signal_number(value: Any) -> int:
    if isinstance(value, int):
        return value
    text = str(value).upper()
    if text.isdigit():
        return int(text)
    return int(signals.Signals[text if text.startswith("SIG") else "SIG" + text])


async def _to_client(ws: WebSocket, stream: OutputStream) -> None:
    async for chunk in stream:
        await ws.send_bytes(chunk)


class _Terminal:
    """What the input loop drives: an exec process or a console session."""

    def __init__(self, write: Any, resize: Any, signal: Any, eof: Any) -> None:
        self.write, self.resize, self.signal, self.eof = write, resize, signal, eof


async def _from_client(ws: WebSocket, term: _Terminal) -> None:
    """Forward the client's frames until it disconnects."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("bytes"):
            await term.write(msg["bytes"])
            continue
        text = msg.get("text")
        if not text:
            continue
        try:
            frame = json.loads(text)
            kind = frame.get("type")
            if kind == "resize":
                await term.resize(int(frame["width"]), int(frame["height"]))
            elif kind == "signal":
                await term.signal(_signal_number(frame["signal"]))
            elif kind == "eof":
                await term.eof()
            else:
                raise ValueError(f"unknown frame type {kind!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            await ws.send_text(json.dumps({"type": "error", "status": 400, "detail": f"bad control frame: {exc}"}))


async def _finish(ws: WebSocket, exit_code: int | None) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps({"type": "exit", "exit_code": exit_code}))
        await ws.close(code=1000)


@router.websocket("/{name}/exec/ws", name="exec-ws", dependencies=[Depends(require(Scope.write))])
async def exec_ws(websocket: WebSocket, name: str, b: WsBackend) -> None:
    """An interactive command: see the module's protocol."""
    start = await _first_frame(websocket, name, b)
    if start is None:
        return
    try:
        proc = await b.client.exec.start(name, start.command, environment=start.environment, cwd=start.cwd,
                                         user=start.user, group=start.group, interactive=start.interactive,
                                         width=start.width, height=start.height)
    except LXDError as exc:
        await _refuse(websocket, 502, f"LXD refused the command: {exc.error}")
        return
    websocket.app.state.owners.record(b.remote, proc.id, b.principal.token_id)

    async def eof() -> None:
        if proc.interactive:
            await proc.write(b"\x04")
        else:
            await proc.close_stdin()

    term = _Terminal(proc.write, proc.resize, proc.signal, eof)
    async with proc:
        outs = [asyncio.ensure_future(_to_client(websocket, proc.stdout))]
        if proc.stderr is not None:
            outs.append(asyncio.ensure_future(_to_client(websocket, proc.stderr)))
        reader = asyncio.ensure_future(_from_client(websocket, term))
        waiter = asyncio.ensure_future(proc.wait())
        try:
            await asyncio.wait([reader, waiter], return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                code = waiter.result()
                await asyncio.wait(outs, timeout=5)
                await _finish(websocket, code)
        finally:
            for t in [reader, waiter, *outs]:
                if not t.done():
                    t.cancel()
            for t in [reader, waiter, *outs]:
                with contextlib.suppress(BaseException):
                    await t


@router.websocket("/{name}/console", name="console-ws", dependencies=[Depends(require(Scope.write))])
async def console_ws(websocket: WebSocket, name: str, b: WsBackend) -> None:
    """The container's console: see the module's protocol (signals are refused; the session ends when the
    client leaves or the console closes, with `{type: exit, exit_code: null}`)."""
    start = await _first_frame(websocket, name, b)
    if start is None:
        return
    try:
        console = await b.client.exec.console(name, width=start.width, height=start.height)
    except LXDError as exc:
        await _refuse(websocket, 409, f"LXD refused the console: {exc.error}")
        return

    async def no_signal(_: int) -> None:
        raise ValueError("a console takes no signals")

    async def eof() -> None:
        await console.write(b"\x04")

    term = _Terminal(console.write, console.resize, no_signal, eof)
    async with console:
        out = asyncio.ensure_future(_to_client(websocket, console.output))
        reader = asyncio.ensure_future(_from_client(websocket, term))
        try:
            await asyncio.wait([reader, out], return_when=asyncio.FIRST_COMPLETED)
            await _finish(websocket, None)
        finally:
            for t in (reader, out):
                if not t.done():
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await t

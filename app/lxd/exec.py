"""Commands in instances over the exec websockets, and console attach.

Every socket LXD offers is connected at once (LXD 5.0 gives 5 s), the control socket always: it carries signals
and window resizes, and closing it would kill the command. Output arrives in binary frames; a text frame marks its
end. Stdin is closed by an empty text frame. LXD 5.0 cannot cancel an exec operation, so timeouts and task
cancellation kill the process with signal 9 through the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import websockets
from websockets.asyncio.client import ClientConnection

from app.lxd.errors import ExecTimeout, LXDError, LXDTimeout, LXDUnavailable
from app.lxd.operations import Operation

if TYPE_CHECKING:
    from app.lxd.client import Client

SIGKILL = 9
OUTPUT_QUEUE_CHUNKS = 64
DRAIN_AFTER_EXIT = 5.0

OutputHandler = Callable[[bytes], Awaitable[None] | None]


@dataclass
class ExecResult:
    """What a finished command returned. Output beyond the cap is dropped and flagged as truncated."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode(errors="replace")


class OutputStream:
    """Output of the command on one websocket: an async iterator of byte chunks, ending at EOF."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[bytes | None] = asyncio.Queue(OUTPUT_QUEUE_CHUNKS)
        self.eof = asyncio.Event()
        self._ended = False

    async def _feed(self, data: bytes | None) -> None:
        await self._q.put(data)
        if data is None:
            self.eof.set()

    async def read(self) -> bytes:
        """The next chunk; b"" at end of stream."""
        if self._ended:
            return b""
        data = await self._q.get()
        if data is None:
            self._ended = True
            return b""
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk


async def _connect_all(client: Client, op: Operation, fds: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Connect the control websocket, then every other one concurrently; close the ones that opened if any fails.

    Control comes first because the command starts as soon as its data sockets are connected: a short command can
    end, and its operation with it, before a control socket opened alongside is connected ("Only running
    operations can be connected": seen on Incus 6.0 over HTTPS on a busy machine)."""
    path = f"/1.0/operations/{op.id}/websocket"
    first = [n for n in fds if n == "control"]
    names = first + [n for n in fds if n != "control"]
    results: list[Any] = []
    for group in (first, names[len(first):]):
        if any(isinstance(r, BaseException) for r in results):
            break
        results += await asyncio.gather(*(client.transport.websocket(path, {"secret": fds[n]},
                                                                     open_timeout=timeout)
                                          for n in group), return_exceptions=True)
    socks = {n: r for n, r in zip(names, results, strict=False) if not isinstance(r, BaseException)}
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for ws in socks.values():
            with contextlib.suppress(Exception):
                await ws.close()
        err = errors[0]
        raise err if isinstance(err, LXDError) else LXDUnavailable(f"exec websocket failed: {err}")
    return socks


class ExecProcess:
    """A running command. Use as `async with`: leaving the block kills the command if it still runs."""

    def __init__(self, op: Operation, socks: dict[str, ClientConnection], *, interactive: bool) -> None:
        self.operation = op
        self.interactive = interactive
        self._socks = socks
        self._stdin = socks["0"]
        self._control = socks["control"]
        self.stdout = OutputStream()
        self.stderr: OutputStream | None = None if interactive else OutputStream()
        self.exit_code: int | None = None
        self.timed_out = False
        self._stdin_closed = False
        self._tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        out_ws = socks["0"] if interactive else socks["1"]
        self._tasks.append(loop.create_task(self._pump(out_ws, self.stdout, close_on_eof=interactive)))
        if self.stderr is not None:
            self._tasks.append(loop.create_task(self._pump(socks["2"], self.stderr, close_on_eof=False)))
        self._tasks.append(loop.create_task(self._drain(self._control)))

    @staticmethod
    async def _drain(ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, asyncio.CancelledError):
            async for _ in ws:
                pass

    async def _pump(self, ws: ClientConnection, out: OutputStream, *, close_on_eof: bool) -> None:
        try:
            async for msg in ws:
                if isinstance(msg, str) or not msg:  # a text (or empty) frame is LXD's end-of-stream barrier
                    break
                await out._feed(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            await out._feed(None)
        if close_on_eof:  # interactive: LXD keeps the operation open until we close the socket
            with contextlib.suppress(Exception):
                await ws.close()
        else:
            await self._drain(ws)

    @property
    def id(self) -> str:
        return self.operation.id

    # ------------------------------------------------------------------------------------------ input, control

    async def write(self, data: bytes) -> None:
        """Send bytes to the command's stdin (or the PTY)."""
        await self._stdin.send(data)

    async def close_stdin(self) -> None:
        """End of input: an empty text frame (no-op when already closed or in interactive mode)."""
        if self._stdin_closed or self.interactive:
            return
        self._stdin_closed = True
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._stdin.send("")

    async def signal(self, signum: int) -> None:
        """Send a signal to the command through the control socket."""
        await self._control.send(json.dumps({"command": "signal", "signal": int(signum)}))

    async def resize(self, width: int, height: int) -> None:
        """Resize the PTY (interactive only); LXD wants the numbers as strings."""
        await self._control.send(json.dumps({"command": "window-resize",
                                             "args": {"width": str(width), "height": str(height)}}))

    async def kill(self) -> None:
        """SIGKILL the command (LXD 5.0 cannot cancel exec operations)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.signal(SIGKILL)

    # ------------------------------------------------------------------------------------------ waiting

    async def wait(self, timeout: float | None = None) -> int:
        """The exit code. After `timeout` seconds the command is killed and `ExecTimeout` raised."""
        if self.exit_code is not None:
            return self.exit_code
        try:
            state = await self.operation.wait(timeout)
        except LXDTimeout as exc:
            self.timed_out = True
            await self.kill()
            with contextlib.suppress(LXDError):
                await self.operation.wait(15)
            await self._finish()
            raise ExecTimeout(f"command still running after {timeout:g}s: killed", operation_id=self.id,
                              path=exc.path) from exc
        except asyncio.CancelledError:
            await asyncio.shield(self._kill_and_close())
            raise
        code = (state.metadata or {}).get("return", -1)
        self.exit_code = int(code) if code is not None else -1
        await self._finish()
        return self.exit_code

    async def _finish(self) -> None:
        """Let the output streams reach their barrier (bounded), then close every socket."""
        outs = [self.stdout] + ([self.stderr] if self.stderr is not None else [])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_AFTER_EXIT):
                await asyncio.gather(*(o.eof.wait() for o in outs))
        await self._close()

    async def _close(self) -> None:
        for ws in self._socks.values():
            with contextlib.suppress(Exception):
                await ws.close()
        for t in self._tasks:
            if not t.done():
                t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t

    async def _kill_and_close(self) -> None:
        if self.exit_code is None and not self.operation.done:
            await self.kill()
            with contextlib.suppress(Exception):
                await self.operation.wait(10)
        await self._close()

    async def __aenter__(self) -> ExecProcess:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.shield(self._kill_and_close())


STOPPED_ACTIONS = frozenset({"instance-stopped", "instance-shutdown", "instance-deleted"})


class ConsoleSession:
    """An attached instance console: `output` stream, `write`, `resize`; `close` detaches."""

    def __init__(self, op: Operation, socks: dict[str, ClientConnection],
                 stopped: asyncio.Task[None] | None = None) -> None:
        self.operation = op
        self._socks = socks
        self.output = OutputStream()
        self._task = asyncio.get_running_loop().create_task(self._pump())
        self._ctl = asyncio.get_running_loop().create_task(ExecProcess._drain(socks["control"]))
        self._stopped = stopped
        if stopped is not None:  # LXD keeps the console open after the instance stops: end the output then
            stopped.add_done_callback(self._on_stopped)

    def _on_stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._closing = asyncio.ensure_future(self._socks["0"].close())

    async def _pump(self) -> None:
        try:
            async for msg in self._socks["0"]:
                if isinstance(msg, bytes) and msg:
                    await self.output._feed(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            await self.output._feed(None)

    async def write(self, data: bytes) -> None:
        await self._socks["0"].send(data)

    async def resize(self, width: int, height: int) -> None:
        await self._socks["control"].send(json.dumps({"command": "window-resize",
                                                      "args": {"width": str(width), "height": str(height)}}))

    async def close(self) -> None:
        """Detach: closing the control socket ends the session; wait for the operation to end."""
        for name in ("control", "0"):
            with contextlib.suppress(Exception):
                await self._socks[name].close()
        for t in (self._task, self._ctl, self._stopped):
            if t is None:
                continue
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(LXDError):
            await self.operation.wait(10)

    async def __aenter__(self) -> ConsoleSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())


class Exec:
    """`client.exec`: run commands (captured or streamed, with a timeout and an output cap), PTYs, consoles."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def start(self, instance: str, command: Sequence[str], *, environment: Mapping[str, str] | None = None,
                    cwd: str | None = None, user: int | None = None, group: int | None = None,
                    interactive: bool = False, width: int = 80, height: int = 24, project: str | None = None,
                    connect_timeout: float = 5.0) -> ExecProcess:
        """Start a command and connect its websockets; use the result as `async with`.

        As with subprocess pipes, read `stdout` and `stderr` (or use `run()`): unread output stalls the command.
        """
        body: dict[str, Any] = {"command": list(command), "environment": dict(environment or {}),
                                "wait-for-websocket": True, "interactive": interactive, "record-output": False,
                                "width": width, "height": height}
        if user is not None:
            body["user"] = user
        if group is not None:
            body["group"] = group
        if cwd is not None:
            body["cwd"] = cwd
        op = await self._client.mutate("POST", f"/1.0/instances/{quote(instance, safe='')}/exec", json=body,
                                       project=project, wait=False)
        fds: dict[str, str] = dict(op.metadata.get("fds") or {})
        if "0" not in fds or "control" not in fds:
            raise LXDError(f"exec operation offers no usable websockets: {sorted(fds)}", operation_id=op.id)
        socks = await _connect_all(self._client, op, fds, connect_timeout)
        return ExecProcess(op, socks, interactive=interactive)

    async def run(self, instance: str, command: Sequence[str], *, stdin: bytes | None = None,
                  environment: Mapping[str, str] | None = None, cwd: str | None = None, user: int | None = None,
                  group: int | None = None, timeout: float | None = None, max_output: int = 64 << 20,
                  on_stdout: OutputHandler | None = None, on_stderr: OutputHandler | None = None,
                  project: str | None = None) -> ExecResult:
        """Run a command to completion; capture up to `max_output` bytes per stream and stream every chunk to
        the handlers. On timeout the command is killed and `ExecTimeout` raised with the partial `result`."""
        proc = await self.start(instance, command, environment=environment, cwd=cwd, user=user, group=group,
                                project=project)
        bufs: dict[str, bytearray] = {"out": bytearray(), "err": bytearray()}
        truncated = {"out": False, "err": False}

        async def collect(key: str, stream: OutputStream, handler: OutputHandler | None) -> None:
            async for chunk in stream:
                if handler is not None:
                    r = handler(chunk)
                    if r is not None:
                        await r
                room = max_output - len(bufs[key])
                if len(chunk) > room:
                    truncated[key] = True
                bufs[key] += chunk[:room] if room > 0 else b""

        async def feed() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                if stdin:
                    await proc.write(stdin)
                await proc.close_stdin()

        def result(code: int) -> ExecResult:
            return ExecResult(code, bytes(bufs["out"]), bytes(bufs["err"]), truncated["out"], truncated["err"],
                              proc.timed_out)

        async with proc:
            assert proc.stderr is not None
            tasks = [asyncio.ensure_future(collect("out", proc.stdout, on_stdout)),
                     asyncio.ensure_future(collect("err", proc.stderr, on_stderr)),
                     asyncio.ensure_future(feed())]
            try:
                code = await proc.wait(timeout)
                await asyncio.wait(tasks[:2], timeout=DRAIN_AFTER_EXIT)
            except ExecTimeout as exc:
                await asyncio.gather(*tasks, return_exceptions=True)
                exc.result = result(-1)
                raise
            finally:
                for t in tasks:
                    if not t.done():
                        t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            return result(code)

    async def console(self, instance: str, *, width: int = 80, height: int = 24, project: str | None = None,
                      connect_timeout: float = 5.0) -> ConsoleSession:
        """Attach to the instance's console (`type: console`). The session's output ends when the instance stops
        (LXD itself keeps a console open past that)."""
        watching = asyncio.Event()
        stopped = asyncio.get_running_loop().create_task(self._until_stopped(instance, project, watching))
        try:
            await asyncio.wait_for(watching.wait(), connect_timeout)  # subscribed before the console exists
            op = await self._client.mutate("POST", f"/1.0/instances/{quote(instance, safe='')}/console",
                                           json={"width": width, "height": height, "type": "console"},
                                           project=project, wait=False)
            fds: dict[str, str] = dict(op.metadata.get("fds") or {})
            socks = await _connect_all(self._client, op, fds, connect_timeout)
        except BaseException:
            stopped.cancel()
            raise
        return ConsoleSession(op, socks, stopped)

    async def _until_stopped(self, instance: str, project: str | None, watching: asyncio.Event) -> None:
        """Return once a lifecycle event says `instance` stopped (or was deleted)."""
        try:
            async with self._client.events.subscribe({"lifecycle"}, project=project) as sub:
                watching.set()
                while True:
                    event = await sub.get()
                    md = event.metadata
                    if md.get("action") in STOPPED_ACTIONS and str(md.get("source", "")).endswith(
                            f"/instances/{quote(instance, safe='')}"):
                        return
        except LXDError:
            watching.set()  # no events stream: the console still works, it just cannot see the stop
            await asyncio.Event().wait()

"""Open streams end when their token does: websockets and Server-Sent Events of a revoked or expired token are
closed within a second.

`StreamGuardMiddleware` (pure ASGI) registers every websocket connection, and every HTTP response that turns out
to be `text/event-stream`, with `OpenStreams`, together with the task serving it. A watch, woken by revocation
through the API and otherwise every `CHECK_INTERVAL` seconds, compares the token of each open stream (the caller
the authentication dependency put in the connection's scope) with the live tokens: those of the tokens file, which
is re-read when it changed on disk (so a revocation by the CLI from another process counts), or, on PostgreSQL,
the copy in memory that a notification refreshes when any process (or the CLI) revokes one, which also wakes the
watch (`app.store.pg_state`). Either says which have expired. A stream whose token is gone is ended for the
client at once (a websocket is closed with 1008 and the reason "token revoked" or "token expired"; an event stream
is ended), then its task is cancelled and the middleware takes that cancellation back. Whatever the route holds
(an LXD exec session, an events subscription, a job subscription) is released by its own `finally`/`async with`
on the way out, as on any disconnect: an interactive command is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.store.tokens import Tokens
from app.tasks import cancel_and_wait

log = logging.getLogger("app.http.open_streams")

CHECK_INTERVAL = 0.25
CLOSE_POLICY_VIOLATION = 1008


@dataclass(eq=False)
class OpenStream:
    """One open websocket or event stream: the task serving it and the way to end it for the client."""

    scope: Scope
    task: asyncio.Task[object]
    send: Send
    """The connection's own `send`, around the route's."""
    running: bool = True
    started: bool = False
    finished: bool = False
    ended: str | None = field(default=None)
    """Why the gateway ended it ("token revoked", "token expired"); None while it may run."""

    @property
    def token_id(self) -> str | None:
        principal = self.scope.get("state", {}).get("principal")
        if principal is None or not principal.authenticated:
            return None
        return str(principal.token_id)

    def end(self, reason: str) -> None:
        """End it now: the client is told at once (close 1008, or the end of the event stream), and the route's
        task is cancelled, which releases what it holds (its own cleanup may take longer; nothing more reaches
        the client)."""
        self.ended = reason
        closing = asyncio.ensure_future(self._tell_client())
        closing.add_done_callback(lambda _: self.task.cancel() if self.running else None)

    async def _tell_client(self) -> None:
        if self.finished:
            return
        self.finished = True
        with contextlib.suppress(Exception):
            if self.scope["type"] == "websocket":
                await self.send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": self.ended})
            elif self.started:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})


class OpenStreams:
    """The open streams of this process, and the watch that ends those whose token is no longer live."""

    def __init__(self, tokens: Tokens, interval: float = CHECK_INTERVAL) -> None:
        self.tokens = tokens
        self.interval = interval
        self._open: set[OpenStream] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def add(self, stream: OpenStream) -> None:
        self._open.add(stream)

    def discard(self, stream: OpenStream) -> None:
        self._open.discard(stream)

    def wake(self) -> None:
        """Check at once (a token was just revoked)."""
        if self._wake is not None:
            self._wake.set()

    def sweep(self) -> int:
        """End every open stream whose token was revoked or has expired; returns how many were ended."""
        held = [(s, s.token_id) for s in self._open if s.ended is None]
        held = [(s, t) for s, t in held if t is not None]
        if not held:
            return 0
        records = self.tokens.by_id()
        ended = 0
        for stream, token_id in held:
            record = records.get(token_id)
            if record is not None and not record.expired():
                continue
            stream.end("token expired" if record is not None else "token revoked")
            ended += 1
        return ended

    async def _watch(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self.sweep()
            except Exception as exc:  # an unreadable tokens file must not stop the watch
                log.warning("checking the tokens of open streams failed: %s", exc)

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="open-streams-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


class StreamGuardMiddleware:
    """Registers websockets and event streams with `OpenStreams` and ends them cleanly when it cancels them."""

    def __init__(self, app: ASGIApp, streams: OpenStreams) -> None:
        self.app = app
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        stream = OpenStream(scope, task, send)

        async def guarded_send(message: Message) -> None:
            if stream.finished:  # ended by the gateway: the route's last words go nowhere
                return
            kind = message["type"]
            if kind == "http.response.start":
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    self.streams.add(stream)
                stream.started = True
            elif kind == "websocket.accept":
                stream.started = True
            elif kind == "websocket.close" or (kind == "http.response.body" and not message.get("more_body")):
                stream.finished = True
            await send(message)

        if scope["type"] == "websocket":
            self.streams.add(stream)
        try:
            await self.app(scope, receive, guarded_send)
        except asyncio.CancelledError:
            if stream.ended is None:
                raise
        finally:
            stream.running = False
            self.streams.discard(stream)
        if stream.ended is not None and task.cancelling() and task.uncancel() > 0:
            raise asyncio.CancelledError  # our cancellation is taken back; someone else's still stands

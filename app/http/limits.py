"""Request limits: body size (413) and a rate limit per token (429 with `Retry-After`).

The rate limiter is a moving window kept in the process (one gateway process: each replica counts its own).
Uploads (`application/octet-stream` or `multipart/form-data` bodies: files, images) have their own size limit,
none by default.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import ProblemError
from app.http.handlers import problem_body
from app.http.middleware import HTTPMiddleware
from app.rates import Rate, parse_rate

UPLOAD_TYPES = (b"application/octet-stream", b"multipart/form-data")
PRUNE_EVERY = 4096
"""Hits between two sweeps of the keys whose window has emptied (a token or an address seen once is forgotten)."""


class MovingWindow:
    """At most `rate.amount` hits per key within any `rate.seconds`; `hit` answers 0.0 when allowed, otherwise the
    seconds until the oldest hit in the window leaves it."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._since_prune = 0

    def hit(self, key: str) -> float:
        now = self._clock()
        start = now - self.rate.seconds
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        while hits and hits[0] <= start:
            hits.popleft()
        wait = hits[0] - start if len(hits) >= self.rate.amount else 0.0
        if not wait:
            hits.append(now)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._prune(start)
        return wait

    def _prune(self, start: float) -> None:
        self._since_prune = 0
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= start]:
            del self._hits[key]

    def __len__(self) -> int:
        return len(self._hits)


class RateLimit:
    def __init__(self, spec: str) -> None:
        self.item = parse_rate(spec) if spec else None
        self.window = MovingWindow(self.item) if self.item is not None else None

    async def hit(self, who: str) -> None:
        if self.window is None:
            return
        wait = self.window.hit(who)
        if wait > 0:
            raise ProblemError(429, f"rate limit of {self.item} exceeded", slug="rate-limited",
                               headers={"Retry-After": str(max(1, math.ceil(wait)))})


class BodyLimitMiddleware(HTTPMiddleware):
    """413 as soon as a request body is known to be too large: by `Content-Length`, or while it streams in."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int) -> None:
        super().__init__(app)
        self.max_body = max_body
        self.max_upload = max_upload

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", []))
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip()
        limit = self.max_upload if ctype in UPLOAD_TYPES else self.max_body
        if not limit:
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(scope, send, limit)
            return
        seen = 0
        too_large = False
        answered = False

        async def counting_receive() -> Message:
            # Past the limit the app is told the body ended; whatever it answers is replaced by the 413.
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replacing_send(message: Message) -> None:
            nonlocal answered
            if not too_large:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                await self._reject(scope, send, limit)

        await self.app(scope, counting_receive, replacing_send)

    @staticmethod
    async def _reject(scope: Scope, send: Send, limit: int) -> None:
        import json

        body = json.dumps(problem_body(413, path=scope.get("path"),
                                       detail=f"the request body is larger than {limit} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

"""Request limits: body size (413) and a rate limit per token (429 with `Retry-After`).

The rate limiter is the `limits` library's moving window over an in-process store (one gateway process).
Uploads (`application/octet-stream` or `multipart/form-data` bodies: files, images) have their own size limit,
none by default.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import ProblemError
from app.http.handlers import problem_body
from app.http.middleware import HTTPMiddleware

UPLOAD_TYPES = (b"application/octet-stream", b"multipart/form-data")


class RateLimit:
    def __init__(self, spec: str) -> None:
        self.item = parse(spec) if spec else None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, who: str) -> None:
        if self.item is None:
            return
        if not await self.limiter.hit(self.item, who):
            stats = await self.limiter.get_window_stats(self.item, who)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            raise ProblemError(429, f"rate limit of {self.item} exceeded", slug="rate-limited",
                               headers={"Retry-After": str(retry)})


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

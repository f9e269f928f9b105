"""`?remote=*`: one listing across every configured remote.

A `GET` of a list route (`LISTS`) with `remote=*` is answered by asking the same route once per remote the caller
may use, concurrently and in-process (the very route, so filters, limits, the read model and every check apply as
they do for one remote), then merging the answers: every item carries `remote`, the merged list is sorted by
remote and then by the item's identity (name, or an image's fingerprint), and paginated with a cursor of its own.

A remote that fails does not fail the answer. It is named in `unreachable: [{remote, problem}]` beside `items`,
with the problem it answered (503 unreachable, 504 too slow, 404 when the project does not exist there...). A
remote that does not answer within `timeout` seconds is named with a 504 problem. Remotes outside the caller's
token limits are left out, as if they were not configured; when the caller may use none, or is not
authenticated, that answer (403, 401) is the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import ProblemError
from app.http.handlers import problem_body
from app.http.pagination import MAX_LIMIT, decode_cursor, encode_cursor

ALL = "*"
LISTS: Mapping[str, str] = {
    "/v1/containers": "name",
    "/v1/images": "fingerprint",
    "/v1/profiles": "name",
    "/v1/networks": "name",
    "/v1/storage-pools": "name",
    "/v1/projects": "name",
}
"""The list routes that take `remote=*`, and the field that names an item within one remote."""

PAGES_PER_REMOTE = 50  # 50,000 items of one kind on one remote at most


@dataclass
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class AllRemotes:
    """The `remote=*` middleware; innermost, so that what is outside it (request id, audit, metrics, rate limits)
    sees one request."""

    def __init__(self, app: ASGIApp, *, timeout: float = 30.0) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or scope["path"] not in LISTS:
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if (ALL not in [v for k, v in query if k == "remote"]):
            await self.app(scope, receive, send)
            return
        try:
            response = await self._answer(scope, query)
        except ProblemError as e:
            response = await scope["app"].exception_handlers[ProblemError](Request(scope), e)
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, query: list[tuple[str, str]]) -> Response:
        if sum(1 for k, _ in query if k == "remote") > 1:
            raise ProblemError(400, "name one remote, or remote=* alone")
        if any(k == "watch" and v.lower() in ("1", "true", "yes", "on") for k, v in query):
            raise ProblemError(400, "a watch follows one remote: name it instead of remote=*", slug="watch-one-remote")
        limit = 100
        cursor: str | None = None
        rest: list[tuple[str, str]] = []
        for k, v in query:
            if k == "limit":
                try:
                    limit = int(v)
                except ValueError:
                    raise ProblemError(400, "limit must be a whole number from 1 to 1000") from None
                if not 1 <= limit <= MAX_LIMIT:
                    raise ProblemError(400, "limit must be a whole number from 1 to 1000")
            elif k == "cursor":
                cursor = v or None
            elif k != "remote":
                rest.append((k, v))
        filters = {"remote": ALL, "query": sorted(rest)}
        after = decode_cursor(cursor, filters) if cursor is not None else None
        names = [spec.name for spec in scope["app"].state.remotes.specs()]
        answers = await asyncio.gather(*(self._list(scope, name, rest) for name in names))
        identity = LISTS[scope["path"]]
        items: list[tuple[str, dict[str, Any]]] = []
        unreachable: list[dict[str, Any]] = []
        refused: list[_Answer] = []
        cache: set[str] = set()
        for name, (answer, listed) in zip(names, answers, strict=True):
            if answer.status == 200:
                for item in listed:
                    item.setdefault("remote", name)
                    items.append((f"{name}\x00{item.get(identity, '')}", item))
                cache.update(v.decode() for k, v in answer.headers if k == b"x-gateway-cache")
            elif answer.status in (401, 403):
                refused.append(answer)  # not this caller's remote: left out
            else:
                unreachable.append({"remote": name, "problem": answer.json()})
        if refused and len(refused) == len(names):
            first = refused[0]
            return Response(first.body, status_code=first.status, headers={
                k.decode(): v.decode() for k, v in first.headers if k != b"content-length"})
        items.sort(key=lambda pair: pair[0])
        if after is not None:
            items = [pair for pair in items if pair[0] > after]
        page = items[:limit]
        body: dict[str, Any] = {
            "items": [item for _, item in page],
            "next_cursor": encode_cursor(page[-1][0], filters) if len(items) > limit else None,
            "unreachable": unreachable,
        }
        headers = {"X-Gateway-Cache": "miss" if "miss" in cache else ("bypass" if "bypass" in cache else "hit")} \
            if cache else {}
        return JSONResponse(body, headers=headers)

    async def _list(self, scope: Scope, remote: str, rest: list[tuple[str, str]]) -> tuple[_Answer, list[Any]]:
        """Every item the route lists on `remote` (following its pages), or the answer that was not a 200."""
        items: list[Any] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(PAGES_PER_REMOTE):
                    params = [*rest, ("remote", remote), ("limit", str(MAX_LIMIT))]
                    if cursor:
                        params.append(("cursor", cursor))
                    answer = await self._call(scope, params)
                    if answer.status != 200:
                        return answer, []
                    page = answer.json()
                    items.extend(page.get("items") or [])
                    cursor = page.get("next_cursor")
                    if not cursor:
                        break
        except TimeoutError:
            problem = problem_body(504, path=scope["path"], slug="lxd-timeout",
                                   detail=f"remote {remote!r} did not answer within {self.timeout:g}s")
            return _Answer(504, [], json.dumps(problem).encode()), []
        return answer, items

    async def _call(self, scope: Scope, params: list[tuple[str, str]]) -> _Answer:
        sub: dict[str, Any] = {**scope, "method": "GET", "query_string": urlencode(params).encode(),
                               "state": dict(scope.get("state") or {})}
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k.lower(), v) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(sub, receive, send)
        if "route" in sub:
            scope.setdefault("route", sub["route"])  # metrics and audit label the request with the list route
        return _Answer(status, headers, b"".join(chunks))

"""The hottest reads, answered without the framework's route matching and dependency resolution.

`GET /v1/containers/{name}` is what CI pipelines poll. Once its answer comes from the read model, most of its cost
is the framework: matching the path against every route, then resolving the route's dependencies one by one.
`FastReads` (the innermost middleware) recognises such a request by its path and answers it by calling the very
functions the route's dependencies call (`current_principal`, the scope check, `backend`) and the route's own
endpoint. It only takes requests whose every input is valid as given (the path parameters match their patterns,
the query holds `remote` and `project` alone, at most once each); anything else goes the usual way, so every
error answer the route gives (422 for a bad name, say) stays the framework's. Errors raised on the way are
answered by the app's own exception handlers. The request is labelled with the route (metrics, audit) as if
the router had matched it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.http.auth import current_principal, require_scope
from app.http.deps import PROJECT_PATTERN, Backend, backend
from app.store.tokens import Scope as TokenScope

PROJECT_RE = re.compile(PROJECT_PATTERN)


@dataclass(frozen=True)
class FastRead:
    """A `GET` route answered on the fast path: its path (groups: the path parameters, each checked already) and
    what it answers for a caller holding `scope` on the backend the request names."""

    operation_id: str
    path: re.Pattern[str]
    scope: TokenScope
    answer: Callable[[Request, Backend, dict[str, str]], Awaitable[Response]]


class FastReads:
    def __init__(self, app: ASGIApp, reads: Sequence[FastRead] = ()) -> None:
        self.app = app
        self.reads = list(reads)
        self._routes: dict[str, APIRoute] | None = None
        self.enabled = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        for read in self.reads:
            m = read.path.fullmatch(scope["path"])
            if m is not None:
                query = _query(scope.get("query_string", b""))
                if query is not None:
                    await self._answer(read, m.groupdict(), query, scope, receive, send)
                    return
                break
        await self.app(scope, receive, send)

    def _route(self, scope: Scope, operation_id: str) -> APIRoute | None:
        if self._routes is None:
            self._routes = {r.operation_id: r for r in _api_routes(scope["app"].routes) if r.operation_id}
        return self._routes.get(operation_id)

    async def _answer(self, read: FastRead, params: dict[str, str], query: dict[str, str], scope: Scope,
                      receive: Receive, send: Send) -> None:
        route = self._route(scope, read.operation_id)
        if route is not None:  # what the router would have set: metrics and audit label the request by it
            scope["route"], scope["endpoint"] = route, route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            principal = await current_principal(request)
            require_scope(request, principal, read.scope)
            b = await backend(request, principal, query.get("remote"), query.get("project", "default"))
            response = await read.answer(request, b, params)
        except Exception as exc:
            response = await _handled(request, exc)
        await response(scope, receive, send)


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every API route, those of included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (inner := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(inner.routes)


def _query(raw: bytes) -> dict[str, str] | None:
    """`remote` and `project`, when the query holds nothing else, each at most once, and valid; else None."""
    if not raw:
        return {}
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in ("remote", "project") or key in out:
            return None
        out[key] = value
    if "project" in out and not PROJECT_RE.fullmatch(out["project"]):
        return None
    return out


async def _handled(request: Request, exc: Exception) -> Response:
    """What the app's exception handlers answer for `exc` (its nearest class with one)."""
    handlers: dict[Any, Any] = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return await handler(request, exc)  # type: ignore[no-any-return]
    raise exc

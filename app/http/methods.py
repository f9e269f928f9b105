"""405 for a method a path does not have, with an `Allow` header that lists every method it has.

Routing alone gets both wrong: a path served by several routes (one per method) was answered with the methods of
the first route only, and a path that only fits a route by its template (`GET /v1/images/find` fits
`GET /v1/images/{fingerprint}`) was answered by that route with a 422 for the path parameter. Here a path belongs
to a route when it fits the template and its path parameters are valid; when no route it belongs to takes the
method, the answer is 405 with the methods of all of them.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.convertors import Convertor
from starlette.routing import Mount, Route, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from app.http.handlers import problem_body
from app.http.middleware import HTTPMiddleware

KNOWN_PATHS = 4096


def _path_fields(dependant: Dependant) -> list[Any]:
    """The path parameters a route declares, its dependencies' included."""
    return [*dependant.path_params, *(f for d in dependant.dependencies for f in _path_fields(d))]


@dataclass(frozen=True)
class RouteTemplate:
    """What `scope["route"]` holds for a 405 answered here (the metrics label requests by its `path`)."""

    path: str


@dataclass(frozen=True)
class _Path:
    template: str
    regex: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]
    route: Any

    def belongs(self, path: str) -> bool:
        """Whether `path` fits the template with valid path parameters."""
        m = self.regex.match(path)
        if m is None:
            return False
        if not isinstance(self.route, APIRoute):
            return True
        params = {k: self.convertors[k].convert(v) for k, v in m.groupdict().items()}
        for field in _path_fields(self.route.dependant):
            if field.alias in params and field.validate(params[field.alias], {}, loc=("path", field.alias))[1]:
                return False
        return True


def http_paths(routes: Iterable[Any], prefix: str = "") -> Iterator[_Path]:
    """Every HTTP route with its full path (included routers are looked into); mounts stand for any method."""
    for route in routes:
        if isinstance(route, Route):
            regex, _, convertors = compile_path(prefix + route.path)
            yield _Path(prefix + route.path, regex, convertors, route)
        elif isinstance(route, Mount):
            regex, _, convertors = compile_path(prefix + route.path + "/{path:path}")
            yield _Path(prefix + route.path, regex, convertors, route)
        elif (inner := getattr(route, "original_router", None)) is not None:
            context = getattr(route, "include_context", None)
            yield from http_paths(inner.routes, prefix + (getattr(context, "prefix", "") or ""))


def allowed_methods(paths: Iterable[_Path], path: str) -> tuple[set[str], str] | None:
    """The methods of the routes `path` belongs to, and the template of the first; None when a mount may serve it
    (any method)."""
    methods: set[str] = set()
    template = ""
    for p in paths:
        if p.belongs(path):
            if not isinstance(p.route, Route):
                return None
            methods |= p.route.methods or set()
            template = template or p.template
    return methods, template


class MethodCheckMiddleware(HTTPMiddleware):
    """405 with the methods the path really has in `Allow`, for a method it does not have."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)
        self._paths: list[_Path] | None = None
        self._known: OrderedDict[str, tuple[set[str], str] | None] = OrderedDict()
        """The answers for recent paths (a path's methods depend on the path alone), most recent last."""

    def _allowed(self, path: str) -> tuple[set[str], str] | None:
        try:
            found = self._known[path]
            self._known.move_to_end(path)
            return found
        except KeyError:
            pass
        assert self._paths is not None
        found = self._known[path] = allowed_methods(self._paths, path)
        if len(self._known) > KNOWN_PATHS:
            self._known.popitem(last=False)
        return found

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._paths is None:  # the routes are all in place by the first request
            self._paths = list(http_paths(scope["app"].routes))
        found = self._allowed(scope["path"])
        if found is None or not found[0] or scope["method"] in found[0]:
            await self.app(scope, receive, send)
            return
        methods, template = found
        scope["route"] = RouteTemplate(template)
        allow = ", ".join(sorted(methods))
        body = json.dumps(problem_body(405, path=scope.get("path"), slug="method-not-allowed",
                                       detail=f"{scope['method']} is not a method of this path (it has {allow})"
                                       )).encode()
        await send({"type": "http.response.start", "status": 405,
                    "headers": [(b"content-type", b"application/problem+json"), (b"allow", allow.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

"""RFC 9457 problem+json: one exception type, one set of handlers, nothing else answers an error.

Every error the gateway sends is `application/problem+json` with `type`, `title`, `status`, `detail`,
`instance` (the request path), `request_id`, and `lxd_error` (LXD's own message) where there is one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.http.request_id import current_request_id
from app.store.datadir import StorageFull, is_storage_full

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://lxd-gateway.dev/problems/"
log = logging.getLogger("app.http")

TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    409: "Conflict", 412: "Precondition failed", 413: "Payload too large", 415: "Unsupported media type",
    422: "Validation failed", 429: "Too many requests", 500: "Internal server error", 502: "Bad gateway",
    503: "Service unavailable", 504: "Gateway timeout", 507: "Insufficient storage",
}
SLUGS = {
    400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
    409: "conflict", 412: "precondition-failed", 413: "payload-too-large", 415: "unsupported-media-type",
    422: "validation", 429: "rate-limited", 500: "internal", 502: "bad-gateway", 503: "unavailable",
    504: "timeout", 507: "storage-full",
}


class ValidationItem(BaseModel):
    field: str = Field(description="dotted path of the offending field", examples=["body.name"])
    message: str = Field(examples=["String should match pattern '^[a-zA-Z][a-zA-Z0-9-]*$'"])


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the kind of problem", examples=[PROBLEM_BASE + "not-found"])
    title: str = Field(examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str | None = Field(None, examples=["container 'web1' not found"])
    instance: str | None = Field(None, description="the request path", examples=["/v1/containers/web1"])
    request_id: str | None = Field(None, examples=["5f0c8a4e2b9d4d7e"])
    lxd_error: str | None = Field(None, description="LXD's own message, when LXD refused", examples=[None])
    errors: list[ValidationItem] | None = Field(None, description="validation errors (422 only)")


class ProblemError(Exception):
    """Raise anywhere in the API layer to answer a problem."""

    def __init__(self, status: int, detail: str | None = None, *, slug: str | None = None,
                 title: str | None = None, lxd_error: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail or title or TITLES.get(status, "Error"))
        self.status = status
        self.detail = detail
        self.slug = slug or SLUGS.get(status, "error")
        self.title = title or TITLES.get(status, "Error")
        self.lxd_error = lxd_error
        self.headers = headers or {}
        self.extra = extra


def refuse_existing(what: str, name: str, existing: Iterable[str]) -> None:
    """409 `exists` when `name` is among the `existing` names of `what`s."""
    if name in set(existing):
        raise ProblemError(409, f"{what} {name!r} exists", slug="exists")


def refuse_in_use(what: str, name: str, used_by: list[str]) -> None:
    """409 `in-use` naming what uses `what` `name`, when anything does."""
    if used_by:
        raise ProblemError(409, f"{what} {name!r} is in use", slug="in-use", used_by=used_by)


def problem_body(status: int, *, path: str | None, detail: str | None = None, slug: str | None = None,
                 title: str | None = None, lxd_error: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or SLUGS.get(status, "error")),
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": path,
        "request_id": extra.pop("request_id", None) or current_request_id(),
    }
    if lxd_error is not None:
        body["lxd_error"] = lxd_error
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem_response(status: int, *, path: str | None, headers: dict[str, str] | None = None,
                     **kw: Any) -> JSONResponse:
    return JSONResponse(problem_body(status, path=path, **kw), status_code=status,
                        media_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def deny_websocket(websocket: WebSocket, status: int, detail: str) -> None:
    """Refuse a websocket handshake with an HTTP problem answer; where the server cannot answer HTTP to a handshake,
    accept and close with 4000 + the status instead (4404: not found)."""
    response = problem_response(status, path=websocket.url.path, detail=detail)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.accept()
        await websocket.close(4000 + status, detail[:120])


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem answers."""
    return {
        s: {"model": Problem, "description": TITLES.get(s, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for s in statuses
    }


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, path=request.url.path, detail=exc.detail, slug=exc.slug,
                            title=exc.title, lxd_error=exc.lxd_error, headers=exc.headers, **exc.extra)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route matches {request.url.path}"
    return problem_response(exc.status_code, path=request.url.path, detail=detail,
                            headers=dict(exc.headers or {}))


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _loc(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem_response(422, path=request.url.path, detail=detail, errors=errors)


async def _storage_full(request: Request, exc: Exception) -> JSONResponse:
    """A write the data directory's full device refused: 507, naming the directory (reads still answer)."""
    if not is_storage_full(exc):
        return await _unhandled(request, exc)
    if not isinstance(exc, StorageFull):  # e.g. ENOSPC writing tokens or an upload spool
        settings = getattr(request.app.state, "settings", None)
        exc = StorageFull(Path(getattr(settings, "data_dir", ".")), str(exc))
    log.warning("refused %s %s: %s", request.method, request.url.path, exc)
    rid = request.scope.get("state", {}).get("request_id")
    return problem_response(507, path=request.url.path, request_id=rid,
                            headers={"x-request-id": rid} if rid else None, detail=str(exc),
                            data_dir=str(exc.directory))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # This handler runs outside the middleware stack: the request id comes from the scope, not the context.
    rid = request.scope.get("state", {}).get("request_id")
    log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, rid)
    return problem_response(500, path=request.url.path, request_id=rid,
                            headers={"x-request-id": rid} if rid else None,
                            detail="an unexpected error happened; quote the request id when reporting it")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StorageFull, _storage_full)
    app.add_exception_handler(OSError, _storage_full)
    app.add_exception_handler(sqlite3.OperationalError, _storage_full)
    app.add_exception_handler(Exception, _unhandled)

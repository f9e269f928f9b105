"""The HTTP answers of errors: every error becomes an RFC 9457 problem (`app.http.errors`), by one set of handlers."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.http.errors import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, SLUGS, TITLES, ProblemError, problem_of
from app.http.request_id import current_request_id
from app.lxd.errors import LXDError
from app.store.datadir import StorageFull, is_storage_full
from app.store.errors import StoreUnavailable

log = logging.getLogger("app.http")


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


def _default_backend(request: Request) -> str:
    """"LXD" or "Incus": what the default remote is (as it last answered)."""
    registry = getattr(request.app.state, "remotes", None)
    try:
        return registry.backend_title() if registry is not None else "LXD"
    except Exception:  # no remote configured: the words matter less than the error
        return "LXD"


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    """A `ProblemError`, or an error `problem_of` maps (LXD's: the remote is named when LXD could not be reached or
    was too slow)."""
    remote = request.scope.get("state", {}).get("remote") or request.query_params.get("remote")
    problem = problem_of(exc, where=f"remote {remote!r}" if remote else _default_backend(request))
    if problem is None:
        return await _unhandled(request, exc)
    return problem_response(problem.status, path=request.url.path, detail=problem.detail, slug=problem.slug,
                            title=problem.title, lxd_error=problem.lxd_error, headers=problem.headers or None,
                            **problem.extra)


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


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The job database cannot be reached (a shared database server down): 503 at once, to retry later."""
    log.warning("refused %s %s: %s", request.method, request.url.path, exc)
    rid = request.scope.get("state", {}).get("request_id")
    return problem_response(503, path=request.url.path, request_id=rid, slug="store-unavailable",
                            headers={"retry-after": "5", **({"x-request-id": rid} if rid else {})}, detail=str(exc))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # This handler runs outside the middleware stack: the request id comes from the scope, not the context.
    rid = request.scope.get("state", {}).get("request_id")
    log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, rid)
    return problem_response(500, path=request.url.path, request_id=rid,
                            headers={"x-request-id": rid} if rid else None,
                            detail="an unexpected error happened; quote the request id when reporting it")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(LXDError, _problem_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StorageFull, _storage_full)
    app.add_exception_handler(OSError, _storage_full)
    app.add_exception_handler(sqlite3.OperationalError, _storage_full)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(Exception, _unhandled)

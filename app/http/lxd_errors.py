"""LXD errors raised by a route become problems (statuses from `app.http.lxd_outcomes`); LXD's own message is
kept in `lxd_error`, and the remote is named when LXD could not be reached or was too slow.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.http.errors import problem_response
from app.http.lxd_outcomes import status_of, summary
from app.lxd import errors as e


async def _lxd_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.LXDError)
    status, slug = status_of(exc)
    remote = request.scope.get("state", {}).get("remote") or request.query_params.get("remote")
    where = f"remote {remote!r}" if remote else "LXD"
    detail = summary(status, where) if status in (503, 504) else exc.error
    return problem_response(status, path=request.url.path, detail=detail, slug=slug, lxd_error=exc.error)


def install_lxd_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(e.LXDError, _lxd_error)

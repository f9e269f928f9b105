"""LXD's exception tree mapped to problems, in one place.

404 not found, 409 conflict, 412 ETag mismatch, 403 forbidden, 400 refused, 503 LXD unreachable, 504 LXD too slow,
502 for anything else LXD answered that the gateway cannot use. LXD's own message is kept in `lxd_error`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.api.problems import problem_response
from app.lxd import errors as e

# Most specific first: the first match wins.
_STATUS: list[tuple[type[e.LXDError], int, str]] = [
    (e.NotFound, 404, "not-found"),
    (e.Conflict, 409, "conflict"),
    (e.PreconditionFailed, 412, "precondition-failed"),
    (e.Forbidden, 403, "lxd-forbidden"),
    (e.BadRequest, 400, "lxd-refused"),
    (e.ExtensionMissing, 400, "extension-missing"),
    (e.LXDUnavailable, 503, "lxd-unavailable"),
    (e.LXDTimeout, 504, "lxd-timeout"),
]


def status_of(exc: e.LXDError) -> tuple[int, str]:
    for cls, status, slug in _STATUS:
        if isinstance(exc, cls):
            return status, slug
    return 502, "lxd-error"


async def _lxd_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.LXDError)
    status, slug = status_of(exc)
    remote = request.scope.get("state", {}).get("remote") or request.query_params.get("remote")
    where = f"remote {remote!r}" if remote else "LXD"
    detail = {503: f"{where} is unreachable", 504: f"{where} did not answer in time"}.get(status, exc.error)
    return problem_response(status, path=request.url.path, detail=detail, slug=slug, lxd_error=exc.error)


def install_lxd_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(e.LXDError, _lxd_error)

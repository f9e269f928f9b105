"""What an LXD error means for a caller of the gateway: one table, used by the HTTP answers and by failed jobs.

404 not found, 409 conflict, 412 ETag mismatch, 403 forbidden, 400 refused, 503 LXD unreachable, 504 LXD too slow,
502 for anything else LXD answered that the gateway cannot use.
"""

from __future__ import annotations

from app.lxd import errors as e

# Most specific first: the first match wins.
LXD_ERROR_STATUS: list[tuple[type[e.LXDError], int, str]] = [
    (e.NotFound, 404, "not-found"),
    (e.Conflict, 409, "conflict"),
    (e.PreconditionFailed, 412, "precondition-failed"),
    (e.Forbidden, 403, "lxd-forbidden"),
    (e.BadRequest, 400, "lxd-refused"),
    (e.ExtensionMissing, 400, "extension-missing"),
    (e.ExecTimeout, 504, "exec-timeout"),
    (e.LXDUnavailable, 503, "lxd-unavailable"),
    (e.LXDTimeout, 504, "lxd-timeout"),
    (e.OperationCancelled, 409, "lxd-operation-cancelled"),
    (e.OperationFailed, 502, "lxd-operation-failed"),
]


def status_of(exc: e.LXDError) -> tuple[int, str]:
    """The HTTP status and problem slug of an LXD error."""
    for cls, status, slug in LXD_ERROR_STATUS:
        if isinstance(exc, cls):
            return status, slug
    return 502, "lxd-error"


def summary(status: int, where: str = "LXD") -> str:
    """A one-line reading of the status, naming the remote when known."""
    return {503: f"{where} is unreachable", 504: f"{where} did not answer in time"}.get(status, f"{where} refused")

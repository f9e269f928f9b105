"""Exceptions raised by the LXD client.

One tree, rooted in `LXDError`; every error carries the HTTP status (or the operation status code), LXD's error
text, the request method and path, and the operation id when one is involved::

    LXDError
    ├── BadRequest               400
    │   └── NotCancellable       the operation cannot be cancelled (DELETE answered 400, or may_cancel is false)
    ├── Forbidden                403
    ├── NotFound                 404
    │   └── OperationVanished    the operation is gone (5 s retention) and its outcome was never seen
    ├── Conflict                 409, and LXD 5.0's 500 "already exists" / "in use"
    ├── PreconditionFailed       412 (ETag mismatch on If-Match)
    ├── ExtensionMissing         the server lacks an API extension the call needs
    ├── OperationFailed          the operation ended with status 400 (Failure)
    │   └── OperationConflict    ... because the object exists or is in use (also a `Conflict`)
    ├── OperationCancelled       the operation ended with status 401 (Cancelled)
    ├── LXDTimeout               a wait ran out of time (the operation may still be running)
    │   └── ExecTimeout          an exec ran out of time and its process was killed
    └── LXDUnavailable           transport: socket missing, refused, TLS failure, pin mismatch, pool exhausted
"""

from __future__ import annotations

import re
from typing import Any


class LXDError(Exception):
    """Root of every error raised by `app.lxd`."""

    def __init__(self, error: str, *, status: int = 0, method: str = "", path: str = "",
                 operation_id: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.method = method
        self.path = path
        self.operation_id = operation_id

    def __str__(self) -> str:
        where = f" ({self.method} {self.path})" if self.method else (f" ({self.path})" if self.path else "")
        op = f" [operation {self.operation_id}]" if self.operation_id else ""
        code = f"[{self.status}] " if self.status else ""
        return f"{code}{self.error}{where}{op}"


class BadRequest(LXDError):
    """LXD rejected the request (400)."""


class NotCancellable(BadRequest):
    """LXD cannot cancel this operation (LXD 5.0: exec, create, start, stop)."""


class Forbidden(LXDError):
    """The client's identity may not do this (403)."""


class NotFound(LXDError):
    """The object does not exist (404)."""


class OperationVanished(NotFound):
    """The operation is no longer known to LXD and its final state was never observed."""


class Conflict(LXDError):
    """The object exists already or is in use (409, or LXD 5.0's 500 for the same)."""


class PreconditionFailed(LXDError):
    """The ETag given in If-Match no longer matches (412)."""


class ExtensionMissing(LXDError):
    """The server does not offer an API extension the call needs."""


class OperationFailed(LXDError):
    """A background operation ended in failure; `operation` holds its final state."""

    def __init__(self, error: str, *, operation: Any = None, **kw: Any) -> None:
        super().__init__(error, **kw)
        self.operation = operation


class OperationCancelled(LXDError):
    """A background operation was cancelled."""

    def __init__(self, error: str, *, operation: Any = None, **kw: Any) -> None:
        super().__init__(error, **kw)
        self.operation = operation


class OperationConflict(OperationFailed, Conflict):
    """An operation failed because its object already exists or is in use."""


class LXDTimeout(LXDError, TimeoutError):
    """A wait ran out of time; the operation may still be running on the server."""


class ExecTimeout(LXDTimeout):
    """An exec ran longer than its timeout; the process was killed. `result` holds what was captured."""

    def __init__(self, error: str, *, result: Any = None, **kw: Any) -> None:
        super().__init__(error, **kw)
        self.result = result


class LXDUnavailable(LXDError):
    """LXD cannot be reached: socket missing, connection refused, TLS or pin failure, pool exhausted."""


_BY_STATUS: dict[int, type[LXDError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
}

# LXD 5.0 answers these with HTTP 500 although they are conflicts. This is the one place that knows it.
_CONFLICT_TEXT = ("already exists", "in use", "already running", "is busy", "non-reusable operation",
                  "relies on this profile")
# ... and these conflicts pass: another operation on the same object was under way (LXD 5.0 lets one update of
# an instance run at a time, and fails a concurrent one with "A matching non-reusable operation has now succeeded").
_BUSY_TEXT = ("is busy", "non-reusable operation")


# LXD 5.0 also answers with HTTP 500 when a fingerprint prefix fits several objects, and when a storage volume's
# config has an unknown key or a bad value: the request is at fault.
_REQUEST_AT_FAULT = re.compile(r"more than one \w+ matches|^invalid (option|value) for ", re.I)


def _is_conflict(error: str) -> bool:
    return any(t in error.lower() for t in _CONFLICT_TEXT)


def is_busy(exc: LXDError) -> bool:
    """Whether LXD refused because another operation on the object was under way (worth trying again)."""
    return any(t in exc.error.lower() for t in _BUSY_TEXT)


def error_for(status: int, error: str, *, method: str = "", path: str = "",
              operation_id: str | None = None) -> LXDError:
    """The exception for an LXD error body (`error_code`, `error`)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        if status == 500 and _is_conflict(error):
            cls = Conflict
        elif status == 500 and _REQUEST_AT_FAULT.search(error):
            cls = BadRequest
        elif status == 503:
            cls = LXDUnavailable
        else:
            cls = LXDError
    if cls is BadRequest and "can't be cancelled" in error.lower():
        cls = NotCancellable
    return cls(error, status=status, method=method, path=path, operation_id=operation_id)


def operation_error(state: Any) -> LXDError:
    """The exception for a failed or cancelled operation state (`status_code` 400 or 401, `err`)."""
    kw: dict[str, Any] = {"status": state.status_code, "operation_id": state.id or None, "operation": state,
                          "path": f"/1.0/operations/{state.id}" if state.id else ""}
    if state.status_code == 401:
        return OperationCancelled(state.err or "operation cancelled", **kw)
    err = state.err or state.status or "operation failed"
    return (OperationConflict if _is_conflict(err) else OperationFailed)(err, **kw)

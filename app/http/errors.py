"""RFC 9457 problems: the one error root of the gateway (`ProblemError`) and the one mapping of other errors to it
(`problem_of`: LXD's errors, by one status table). No web framework here: the job engine maps its failures with
the same `problem_of`; the HTTP answers are made in `app.http.handlers`.

Every error the gateway sends is `application/problem+json` with `type`, `title`, `status`, `detail`,
`instance` (the request path), `request_id`, and `lxd_error` (LXD's own message) where there is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from app.lxd import errors as e

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://lxd-gateway.dev/problems/"

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


class JobProblem(Problem):
    """The problem (RFC 9457) of a failed job: a `Problem` whose `status` is null when the failure maps to no HTTP
    status (a step of the job that gave up), with the job's own details beside it (e.g. `failed`, `removed`)."""

    status: int | None = Field(  # type: ignore[assignment]
        description="the HTTP status the failure maps to, or null", examples=[409])


class ProblemError(Exception):
    """The root of the gateway's errors: raise it (or a subclass) anywhere to answer a problem.

    `ProblemError(status, detail, slug=...)` answers `status`; a subclass may fix `status` and `slug` at class level
    and be raised as `SubError(detail)`."""

    status: int = 500
    slug: str = "internal"
    status_from_lxd: ClassVar[bool] = False
    """A subclass that sets it, raised from an LXD error (`raise ... from exc`, at any depth), answers that error's
    status, and its slug unless one was given (see `problem_of`)."""

    def __init__(self, status: int | str | None = None, detail: str | None = None, *, slug: str | None = None,
                 title: str | None = None, lxd_error: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        if isinstance(status, str) and detail is None:  # SubError("what went wrong")
            status, detail = None, status
        code = type(self).status if status is None else int(status)
        super().__init__(detail or title or TITLES.get(code, "Error"))
        self.status = code
        self.detail = detail
        self.slug = slug or (type(self).slug if status is None else SLUGS.get(code, "error"))
        self.slug_given = slug is not None
        self.title = title or TITLES.get(code, "Error")
        self.title_given = title is not None
        self.lxd_error = lxd_error
        self.headers = headers or {}
        self.extra = extra


# What an LXD error means for a caller of the gateway. Most specific first: the first match wins.
# 404 not found, 409 conflict, 412 ETag mismatch, 403 forbidden, 400 refused, 503 LXD unreachable, 504 LXD too slow,
# 502 for anything else LXD answered that the gateway cannot use.
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


def backend_title(slug: str, backend: str = "LXD") -> str | None:
    """The title of a job's problem that an LXD error maps to, naming the backend that answered ("Incus
    unavailable", "LXD operation failed"); None for a slug that is not the daemon's (`lxd-*`: the slugs stay)."""
    return f"{backend} {slug[4:].replace('-', ' ')}" if slug.startswith("lxd-") else None


def lxd_cause(exc: BaseException) -> e.LXDError | None:
    """The LXD error `exc` was raised from, at any depth of `__cause__`."""
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, e.LXDError):
        cause = cause.__cause__
    return cause


def problem_of(exc: BaseException, backend: str = "LXD", *, where: str | None = None) -> ProblemError | None:
    """The problem `exc` answers, or None when it is not one the gateway knows (an unexpected error).

    A `ProblemError` is its own problem (with the status of the LXD error it was raised from when its class says
    `status_from_lxd`, LXD's message in `lxd_error`). An LXD error keeps LXD's message in `lxd_error`; answering a
    request (`where` names the remote, or the backend) its detail is LXD's message, or says that `where` was
    unreachable or too slow; for a job (no `where`) the detail is that summary, naming the `backend` ("LXD" or
    "Incus"), followed by the daemon's message, and the title names the backend too ("Incus unavailable")."""
    if isinstance(exc, ProblemError):
        cause = lxd_cause(exc) if exc.status_from_lxd else None
        if cause is None:
            return exc
        status, slug = status_of(cause)
        return ProblemError(status, exc.detail, slug=exc.slug if exc.slug_given else slug, lxd_error=cause.error,
                            headers=exc.headers, **exc.extra)
    if isinstance(exc, e.LXDError):
        status, slug = status_of(exc)
        if where is None:
            detail = f"{summary(status, backend)}: {exc.error}"
            return ProblemError(status, detail, slug=slug, lxd_error=exc.error, title=backend_title(slug, backend))
        detail = summary(status, where) if status in (503, 504) else exc.error
        return ProblemError(status, detail, slug=slug, lxd_error=exc.error)
    return None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem answers."""
    return {
        s: {"model": Problem, "description": TITLES.get(s, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for s in statuses
    }


def refuse_existing(what: str, name: str, existing: Iterable[str]) -> None:
    """409 `exists` when `name` is among the `existing` names of `what`s."""
    if name in set(existing):
        raise ProblemError(409, f"{what} {name!r} exists", slug="exists")


def refuse_in_use(what: str, name: str, used_by: list[str]) -> None:
    """409 `in-use` naming what uses `what` `name`, when anything does."""
    if used_by:
        raise ProblemError(409, f"{what} {name!r} is in use", slug="in-use", used_by=used_by)

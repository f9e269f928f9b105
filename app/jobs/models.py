"""The job as callers see it: one row per long-running action of the gateway.

`Job` is the public shape (`GET /v1/jobs/{id}`); everything else here supports it: the progress block, the LXD
operations a job started, the event messages streamed to websockets and SSE, and the problem object of a failed job.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer
from pydantic.json_schema import SkipJsonSchema

PROBLEM_BASE = "https://lxd-gateway.dev/problems/"
"""Prefix of every problem `type` URI (the API layer uses the same one)."""


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def ended(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    """UTC RFC 3339 with milliseconds and a `Z`, e.g. `2026-11-01T12:00:00.123Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobProgress(BaseModel):
    stage: str | None = Field(None, description="what the job is doing now", examples=["Retrieving image"])
    percent: int | None = Field(None, ge=0, le=100, description="0 to 100, or null when unknown", examples=[42])
    message: str | None = Field(None, examples=["Retrieving image: 42% (12.3MB/s)"])


class LxdOperationRef(BaseModel):
    id: str = Field(description="LXD's operation id", examples=["9d1b3a1e-..."])
    remote: str = Field(examples=["local"])
    status: str = Field(description="LXD's status of the operation as last seen", examples=["Running"])


class JobCleanup(BaseModel):
    """Undoing what a failed or cancelled job had done (e.g. removing the container a create left).

    `pending`: it could not be done yet (LXD did not answer) and is retried, with backoff, until it succeeds, also
    after a restart of the gateway; `done`: it was done. The job's own status does not change with it."""

    status: Literal["pending", "done"] = Field(description="`pending`: not done yet, retried; `done`: done",
                                              examples=["pending"])
    detail: str = Field(description="what was undone, or what is left and why", examples=[
        "container 'web1' could not be removed yet (LXD is unavailable); its removal is retried"])
    attempts: int = Field(1, ge=1, description="attempts made so far", examples=[1])
    last_error: str | None = Field(None, description="why the last attempt failed", examples=[None])
    updated_at: datetime = Field(description="when the last attempt ended", examples=["2026-11-01T12:00:00.123Z"])

    @field_serializer("updated_at")
    def _time(self, value: datetime) -> str:
        return rfc3339(value)


class Job(BaseModel):
    """A long-running action: poll it, stream it, cancel it."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(examples=["3f6e2b0c9a8d4e1f8b7a6c5d4e3f2a1b"])
    kind: str = Field(description="the action", examples=["container.create"])
    status: JobStatus = Field(examples=["running"])
    progress: JobProgress = Field(default_factory=JobProgress)
    remote: str | None = Field(None, examples=["local"])
    project: str | None = Field(None, examples=["default"])
    resource: str | None = Field(None, description="gateway path of what the job acts on",
                                 examples=["/v1/containers/c1"])
    lxd_operations: list[LxdOperationRef] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    requested_by: str | None = Field(None, description="name of the token that started the job", examples=["ci"])
    result: Any = Field(None, description="what the job produced (per kind), once succeeded. Its output "
                        "(`stdout`, `stderr`) is shown only on `GET /v1/jobs/{id}` to the token that started the job "
                        "and to admin tokens; elsewhere it is left out and `output_omitted` is true")
    error: dict[str, Any] | None = Field(None, description="a problem object (RFC 9457) when the job failed")
    params: dict[str, Any] | None = Field(None, description="what the job was asked to do (the request); only on "
                                          "`GET /v1/jobs/{id}`, for the token that started the job and admin tokens; "
                                          "null elsewhere")
    token_id: SkipJsonSchema[str | None] = Field(None, exclude=True)
    """The stable id of the token that started the job (never shown): its params and output belong to it."""
    cleanup: JobCleanup | None = Field(None, description="undoing what a failed or cancelled job had done, when "
                                       "there was something to undo: `pending` (not done yet, retried) or `done`")

    @field_serializer("created_at", "started_at", "finished_at")
    def _times(self, value: datetime | None) -> str | None:
        return rfc3339(value) if value is not None else None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


OUTPUT_KEYS = ("stdout", "stderr")
"""Keys of a job's result that hold captured output: stored apart, shown only to the job's owner on a single read."""


def split_output(result: Any) -> tuple[Any, dict[str, Any] | None]:
    """A result without its output, and the output (None when the result has none)."""
    if not isinstance(result, dict) or not any(k in result for k in OUTPUT_KEYS):
        return result, None
    return ({k: v for k, v in result.items() if k not in OUTPUT_KEYS},
            {k: result[k] for k in OUTPUT_KEYS if k in result})


def omit_output(result: Any, *, had_output: bool = False) -> Any:
    """The result as shown without its output: `stdout`/`stderr` left out and `output_omitted: true`."""
    rest, output = split_output(result)
    if output is None and not had_output:
        return result
    return {**(rest if isinstance(rest, dict) else {}), "output_omitted": True}


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = Field(None, description="opaque; pass it as `cursor` for the next page; null at the end")


EventType = Literal["snapshot", "progress", "status", "output", "end"]


class JobMessage(BaseModel):
    """One message on a job stream (websocket or SSE).

    `snapshot` and `end` carry the whole job; `progress`, `status` and `output` carry the job too (as it is after
    the change). `output` data is `{stream, text}` or `{stream, b64}`; `progress` data is the progress block.
    """

    type: EventType
    seq: int = Field(description="increases by one with every change of the job")
    job: dict[str, Any]
    data: dict[str, Any] | None = None


def problem(slug: str, detail: str | None, *, title: str | None = None, status: int | None = None,
            lxd_error: str | None = None, instance: str | None = None, **extra: Any) -> dict[str, Any]:
    """A problem object (RFC 9457) for a job's `error`."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title or slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if lxd_error is not None:
        body["lxd_error"] = lxd_error
    body.update({k: v for k, v in extra.items() if v is not None})
    return body

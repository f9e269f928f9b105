"""What the gateway answers, as pydantic models.

Every model keeps fields it does not name (`extra="allow"`): the gateway adds fields freely, and an older client
must still read a newer gateway's answers. Only the fields the contract names are typed here."""

from __future__ import annotations

import base64
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ValidationItem(Model):
    field: str = ""
    message: str = ""


class Problem(Model):
    """An RFC 9457 problem document, as every error of the gateway is."""

    type: str = "about:blank"
    title: str = ""
    status: int | None = None
    detail: str | None = None
    instance: str | None = None
    lxd_error: str | None = None
    request_id: str | None = None
    errors: list[ValidationItem] | None = None

    def describe(self) -> str:
        """One line for people: `title: detail (status)`, with LXD's message and the validation errors."""
        text = self.title or self.type
        if self.detail and self.detail != self.title:
            text = f"{text}: {self.detail}"
        if self.lxd_error and self.lxd_error not in text:
            text = f"{text} (LXD: {self.lxd_error})"
        if self.errors:
            text += "; " + "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        if self.status:
            text += f" [{self.status}]"
        return text


class JobProgress(Model):
    stage: str | None = None
    percent: int | None = None
    message: str | None = None


class LxdOperationRef(Model):
    id: str
    remote: str | None = None
    status: str | None = None


class Job(Model):
    """A long-running action of the gateway: poll it (`jobs.get`, `jobs.wait`), stream it, cancel it."""

    id: str
    kind: str
    status: JobStatus
    progress: JobProgress = Field(default_factory=JobProgress)
    remote: str | None = None
    project: str | None = None
    resource: str | None = None
    lxd_operations: list[LxdOperationRef] = Field(default_factory=list)
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    requested_by: str | None = None
    params: dict[str, Any] | None = None
    result: Any = None
    error: Problem | None = None
    cleanup: dict[str, Any] | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def exec_result(self) -> ExecResult:
        """The result of a `container.exec` job that succeeded (whatever the command's exit code)."""
        return ExecResult.model_validate(self.result or {})


class ExecResult(Model):
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False


class JobMessage(Model):
    """One message of a job's stream: `snapshot`, `progress`, `status`, `output` or `end`; each carries the job."""

    type: str
    seq: int
    job: Job
    data: dict[str, Any] | None = None

    @property
    def output(self) -> tuple[str, bytes] | None:
        """For an `output` message: the stream (`stdout`, `stderr`) and its bytes."""
        if self.type != "output" or self.data is None:
            return None
        stream = str(self.data.get("stream", "stdout"))
        if "b64" in self.data:
            return stream, base64.b64decode(self.data["b64"])
        return stream, str(self.data.get("text", "")).encode()


class Address(Model):
    address: str
    family: str | None = None
    scope: str | None = None
    interface: str | None = None


class Container(Model):
    name: str
    status: str
    status_code: int | None = None
    architecture: str | None = None
    cpus: int | None = None
    memory_mib: int | None = None
    profiles: list[str] = Field(default_factory=list)
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    addresses: list[Address] = Field(default_factory=list)
    interfaces: list[dict[str, Any]] = Field(default_factory=list)
    created_at: str | None = None
    location: str | None = None
    project: str | None = None
    remote: str | None = None


class Image(Model):
    fingerprint: str
    aliases: list[str] = Field(default_factory=list)
    architecture: str | None = None
    type: str | None = None
    size: int | None = None
    public: bool | None = None
    auto_update: bool | None = None
    cached: bool | None = None
    properties: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None
    uploaded_at: str | None = None


class Written(Model):
    """What a file upload wrote."""

    path: str
    size: int
    sha256: str


class Unreachable(Model):
    remote: str
    problem: Problem | None = None


T = TypeVar("T", bound=BaseModel)


class Page(Model, Generic[T]):
    """One page of a collection: pass `next_cursor` as `cursor` for the next one (None on the last page)."""

    items: list[T]
    next_cursor: str | None = None
    unreachable: list[Unreachable] | None = None

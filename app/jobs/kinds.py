"""Job kinds: what a job does, how it is cancelled, and how it is settled after a crash.

A kind is registered by name with its step coroutine (`run(ctx) -> result`), a cancel policy, and optionally
`rollback(ctx)` (undo after a cancel or a failure) and `recover(job, ctx) -> RecoveryOutcome` (settle a job that a
dead gateway left `running`, from the state of its resource).

    @job_kind("container.create", cancel=CancelPolicy.ROLLBACK_AFTER_STEP, recover=recover_create,
              rollback=remove_container)
    async def create_container(ctx: JobContext) -> dict:
        ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from app.jobs.models import Job, JobStatus, problem

if TYPE_CHECKING:
    from app.jobs.runner import JobContext


class CancelPolicy(StrEnum):
    """What `DELETE /v1/jobs/{id}` does to a running job of a kind (a queued job never starts, whatever the kind).

    - `kill-process` (exec): the cancel hooks run (they kill the process); the job ends `cancelled` when its step
      returns.
    - `cancel-operation` (image copy): the cancel hooks run (they cancel LXD's operation); same ending.
    - `rollback-after-step` (create): the job stops at its next `ctx.checkpoint()`, `rollback` runs, the job ends
      `cancelled`. Cancel hooks run too, when any are registered.
    - `interrupt` (work done by the gateway itself): the step is interrupted at once (asyncio cancellation).

    In every policy a step that has not ended `cancel_timeout` seconds after the request is interrupted.
    """

    KILL_PROCESS = "kill-process"
    CANCEL_OPERATION = "cancel-operation"
    ROLLBACK_AFTER_STEP = "rollback-after-step"
    INTERRUPT = "interrupt"


@dataclass(frozen=True)
class RecoveryOutcome:
    """How a job left `running` by a dead gateway ends."""

    status: JobStatus
    result: Any = None
    error: dict[str, Any] | None = None

    @classmethod
    def succeeded(cls, result: Any = None) -> RecoveryOutcome:
        return cls(JobStatus.succeeded, result=result)

    @classmethod
    def failed(cls, slug: str, detail: str, *, lxd_error: str | None = None, **extra: Any) -> RecoveryOutcome:
        return cls(JobStatus.failed, error=problem(slug, detail, lxd_error=lxd_error, **extra))

    @classmethod
    def cancelled(cls) -> RecoveryOutcome:
        return cls(JobStatus.cancelled)


class RollbackIncomplete(Exception):
    """Raise from a rollback that could not be done yet (LXD did not answer): the message says what is left undone.
    The runner records the cleanup as `pending` and retries the rollback until it succeeds."""


StepFn = Callable[["JobContext"], Awaitable[Any]]
RollbackFn = Callable[["JobContext"], Awaitable[str | None]]
"""Undo what the job did; answer what was undone (None: nothing needed undoing)."""
RecoverFn = Callable[[Job, "JobContext"], Awaitable[RecoveryOutcome]]


@dataclass(frozen=True)
class JobKind:
    name: str
    run: StepFn
    cancel: CancelPolicy = CancelPolicy.INTERRUPT
    rollback: RollbackFn | None = None
    recover: RecoverFn | None = None
    cancel_timeout: float | None = 60.0
    description: str = ""


class UnknownJobKind(LookupError):
    pass


class JobKinds:
    """The registry of kinds, by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: JobKind, *, replace: bool = False) -> JobKind:
        existing = self._kinds.get(kind.name)
        if existing is not None and existing != kind and not replace:
            raise ValueError(f"job kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind
        return kind

    def get(self, name: str) -> JobKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownJobKind(f"no job kind {name!r} is registered") from None

    def find(self, name: str) -> JobKind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)


default_kinds = JobKinds()
"""The gateway's kinds; resource modules register theirs here at import."""


def job_kind(name: str, *, cancel: CancelPolicy = CancelPolicy.INTERRUPT, rollback: RollbackFn | None = None,
             recover: RecoverFn | None = None, cancel_timeout: float | None = 60.0, registry: JobKinds | None = None,
             replace: bool = False) -> Callable[[StepFn], StepFn]:
    """Decorator registering a step coroutine as the job kind `name`."""

    def register(fn: StepFn) -> StepFn:
        (registry or default_kinds).register(
            JobKind(name=name, run=fn, cancel=cancel, rollback=rollback, recover=recover,
                    cancel_timeout=cancel_timeout, description=(fn.__doc__ or "").strip()), replace=replace)
        return fn

    return register

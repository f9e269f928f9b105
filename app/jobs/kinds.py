"""Job kinds: what a job does, how it is cancelled, and how it is settled after a crash.

A kind is a `JobKind` value: its name, its step coroutine (`run(ctx) -> result`), a cancel policy, and optionally
`rollback(ctx)` (undo after a cancel or a failure) and `recover(job, ctx) -> RecoveryOutcome` (settle a job that a
dead gateway left `running`, from the state of its resource). The application lists the kinds it runs:

    CREATE = JobKind.of("container.create", create_container, cancel=CancelPolicy.ROLLBACK_AFTER_STEP,
                        recover=recover_create, rollback=remove_container)
    runner = JobRunner(store, bus, kinds=JobKinds((CREATE, ...)))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from app.jobs.models import Job, JobStatus, problem

CancelHook = Callable[[], Awaitable[Any]]


class JobContext(Protocol):
    """What a step sees of its job (the runner implements it). All reporting methods are cheap; none blocks on a
    slow watcher."""

    params: dict[str, Any]
    checkpoints: dict[str, Any]
    """Steps checkpointed so far (also those of a previous run, when recovering)."""
    recovering: bool

    @property
    def services(self) -> dict[str, Any]:
        """What the gateway hands every job (e.g. the LXD clients of the remotes, the settings)."""

    @property
    def job(self) -> Job: ...

    @property
    def job_id(self) -> str: ...

    @property
    def remote(self) -> str | None: ...

    @property
    def project(self) -> str | None: ...

    @property
    def cancel_requested(self) -> bool: ...

    async def progress(self, stage: str | None, percent: int | float | None = None,
                       message: str | None = None) -> None:
        """Report progress (LXD's progress passes through here)."""

    async def output(self, stream: str, data: str | bytes) -> None:
        """Stream output (e.g. an exec's stdout/stderr); text as text, bytes as base64."""

    async def record_operation(self, remote: str, op_id: str, status: str = "Running") -> None:
        """Record an LXD operation the job started (or its new status); kept with the job for good."""

    async def set_resource(self, resource: str) -> None: ...

    async def checkpoint(self, step: str, data: Any = None) -> None:
        """Record that `step` is done (with what recovery or rollback needs to know). Raises `JobCancelled` when
        the job was asked to stop. Call it at the step it marks: recovery reads the checkpoints, never messages."""

    def raise_if_cancelled(self) -> None: ...

    def on_cancel(self, hook: CancelHook) -> Callable[[], None]:
        """Run `hook()` when the job is cancelled; returns a function that unregisters it."""


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


StepFn = Callable[[JobContext], Awaitable[Any]]
RollbackFn = Callable[[JobContext], Awaitable[str | None]]
"""Undo what the job did; answer what was undone (None: nothing needed undoing)."""
RecoverFn = Callable[[Job, JobContext], Awaitable[RecoveryOutcome]]


@dataclass(frozen=True)
class JobKind:
    name: str
    run: StepFn
    cancel: CancelPolicy = CancelPolicy.INTERRUPT
    rollback: RollbackFn | None = None
    recover: RecoverFn | None = None
    cancel_timeout: float | None = 60.0
    description: str = ""
    params: type | None = None
    """A pydantic model describing the job's `params` (for the API's schema only; the steps see a dict)."""
    result: type | None = None
    """A pydantic model describing the job's `result` (for the API's schema only; steps return plain data)."""

    @classmethod
    def of(cls, name: str, run: StepFn, *, cancel: CancelPolicy = CancelPolicy.INTERRUPT,
           rollback: RollbackFn | None = None, recover: RecoverFn | None = None,
           cancel_timeout: float | None = 60.0, params: type | None = None, result: type | None = None) -> JobKind:
        """The kind `name` running `run`, described by its docstring."""
        return cls(name=name, run=run, cancel=cancel, rollback=rollback, recover=recover,
                   cancel_timeout=cancel_timeout, description=(run.__doc__ or "").strip(), params=params,
                   result=result)

    def typed(self, params: type | None, result: type | None) -> JobKind:
        """This kind with the models describing its `params` and its `result` in the API's schema."""
        return replace(self, params=params, result=result)


class UnknownJobKind(LookupError):
    pass


class JobKinds:
    """The kinds a runner knows, by name."""

    def __init__(self, kinds: Iterable[JobKind] = ()) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds:
            self.register(kind)

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

    def all(self) -> list[JobKind]:
        """Every kind, by name."""
        return [self._kinds[name] for name in sorted(self._kinds)]

"""Jobs: every long-running action of the gateway, persisted, streamed, cancellable, idempotent, recovered.

Define a kind with `job_kind(...)` (see `app.jobs.kinds`); its step gets a `JobContext`. Start jobs from routes
with `app.jobs.starter.JobStarterDep`.
"""

from app.jobs.kinds import (
    CancelPolicy,
    JobKind,
    JobKinds,
    RecoveryOutcome,
    RollbackIncomplete,
    default_kinds,
    job_kind,
)
from app.jobs.models import Job, JobProgress, JobStatus, LxdOperationRef, problem
from app.jobs.runner import (
    JobAlreadyEnded,
    JobCancelled,
    JobContext,
    JobFailure,
    JobNotFound,
    JobRunner,
    RunnerClosed,
    register_error_mapper,
)

__all__ = [
    "CancelPolicy",
    "Job",
    "JobAlreadyEnded",
    "JobCancelled",
    "JobContext",
    "JobFailure",
    "JobKind",
    "JobKinds",
    "JobNotFound",
    "JobProgress",
    "JobRunner",
    "JobStatus",
    "LxdOperationRef",
    "RecoveryOutcome",
    "RollbackIncomplete",
    "RunnerClosed",
    "default_kinds",
    "job_kind",
    "problem",
    "register_error_mapper",
]

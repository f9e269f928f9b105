"""Jobs: every long-running action of the gateway, persisted, streamed, cancellable, idempotent, recovered.

Define a kind as a `JobKind` value (see `app.jobs.kinds`) and list it where the app is made; its step gets a
`JobContext`. Start jobs from routes with `app.jobs.starter.JobStarterDep`.
"""

from app.jobs.kinds import CancelPolicy, JobContext, JobKind, JobKinds, RecoveryOutcome, RollbackIncomplete
from app.jobs.models import Job, JobProgress, JobStatus, LxdOperationRef, problem
from app.jobs.runner import (
    JobAlreadyEnded,
    JobCancelled,
    JobFailure,
    JobNotFound,
    JobRunner,
    RunnerClosed,
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
    "problem",
]

"""Where jobs live: the `JobStore` interface the engine uses, and the rows it deals in.

The engine never imports an implementation: the application hands it one (`app.store.jobs.SQLiteJobStore`, the
embedded default, or `app.store.postgres.PostgresJobStore`, shared by several gateway processes). Rows carry
`owner_id` and `lease_until` so that a shared store can claim the jobs of a replica whose lease ran out, without any
change in the callers. A store that cannot reach its database raises `app.store.errors.StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from app.jobs.models import Job


class StoreLocked(RuntimeError):
    """Another gateway process already uses this job database."""


class LeaseLost(RuntimeError):
    """A write of a job this process no longer owns: another process claimed it (its lease had run out). The
    writer must stop working on the job and write nothing more of it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is no longer owned by this process")
        self.job_id = job_id


@dataclass(frozen=True)
class JobFilter:
    """List filters; `None` means any."""

    status: tuple[str, ...] | None = None
    kind: str | None = None
    resource: str | None = None
    remote: str | None = None
    project: str | None = None


@dataclass
class StoredJob:
    """A job with what only the gateway needs: its input, checkpoints, last message number and lease."""

    job: Job
    params: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    position: int = 0
    owner_id: str | None = None
    lease_until: float | None = None
    request_id: str | None = None


@dataclass
class ListedJob:
    """A job as a listing reads it: without params, checkpoints or output (`has_output` says it has some)."""

    job: Job
    position: int
    has_output: bool = False


@dataclass(frozen=True)
class IdempotencyRecord:
    scope: str
    key: str
    fingerprint: str
    job_id: str | None
    created_at: float
    expires_at: float
    owner_id: str | None


class JobStore(Protocol):
    """Persistence of jobs and idempotency records. Every method is safe to call concurrently.

    `shared` says whether several processes use the store at once (then leases are renewed, claimed when they run
    out, and fenced: a write given `owner_id` changes the job only while that process owns it, else raises
    `LeaseLost`)."""

    shared: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def insert(self, job: Job, *, params: dict[str, Any], owner_id: str, lease_until: float,
                     request_id: str | None = None) -> None: ...
    """Store a new job; `job.token_id` is the token that started it."""
    async def save(self, job: Job, *, seq: int, owner_id: str | None = None) -> None: ...
    async def save_checkpoint(self, job_id: str, step: str, data: Any, *, owner_id: str | None = None) -> None: ...
    async def pending_cleanups(self) -> list[StoredJob]: ...
    async def check_writable(self) -> str | None: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def load(self, job_id: str) -> StoredJob | None: ...
    async def list(self, flt: JobFilter, *, limit: int, before: int | None = None,
                   remotes: tuple[str, ...] | None = None,
                   projects: tuple[str, ...] | None = None) -> list[ListedJob]: ...
    """Newest first; never loads params or output. `remotes`/`projects` (None: any) keep only jobs within them."""
    async def claim_unfinished(self, owner_id: str, lease_until: float) -> list[StoredJob]: ...
    """Give `owner_id` the unfinished jobs no live process holds, oldest first: every one on the embedded store
    (its lock admits one process), those whose lease ran out on a shared store (never one job to two callers)."""
    async def claim_expired(self, owner_id: str, lease_until: float) -> list[StoredJob]: ...
    """Give `owner_id` the unfinished jobs whose lease ran out (whoever held them), oldest first; never one job to
    two callers. Nothing on the embedded store (its one process holds every job)."""
    async def renew_leases(self, owner_id: str, lease_until: float,
                           job_ids: list[str] | None = None) -> list[str]: ...
    """Extend the leases of `owner_id`'s unfinished jobs (only `job_ids` among them when given; a time already past
    gives them up). Returns the ids renewed (a shared store; the embedded one returns [])."""
    async def request_cancel(self, job_id: str) -> bool: ...
    """Ask the owner of an unfinished job (another process) to cancel it: False when it is not unfinished. The
    embedded store has no other process: always False."""
    async def cancel_requests(self, owner_id: str) -> list[str]: ...
    """The unfinished jobs of `owner_id` whose cancel another process asked."""
    async def listen_cancels(self, callback: Callable[[str], None]) -> None: ...
    """From now on, call `callback(job_id)` when another process asks a cancel (a shared store; else never)."""
    async def prune(self, finished_before: datetime) -> int: ...

    async def idempotency_reserve(self, scope: str, key: str, fingerprint: str, *, owner_id: str, now: float,
                                  ttl: float) -> tuple[IdempotencyRecord, bool]: ...
    async def idempotency_complete(self, scope: str, key: str, job_id: str) -> None: ...
    async def idempotency_release(self, scope: str, key: str) -> None: ...
    async def idempotency_prune(self, now: float) -> int: ...

    async def audit_append(self, entry: dict[str, Any]) -> None: ...
    async def audit_list(self, *, limit: int, before: int | None = None) -> list[dict[str, Any]]: ...
    async def audit_prune(self, before: datetime) -> int: ...

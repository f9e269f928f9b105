"""The job runner: jobs start `queued`, run as asyncio tasks (a limited number at once per remote), and end
`succeeded`, `failed` (with a problem object naming the cause and LXD's own message) or `cancelled`.

A job's step coroutine gets a `JobContext`: it reports progress and output, records each LXD operation it starts,
checkpoints its steps, and registers the hooks that cancel it. Every change goes on the bus at once; progress (and
the new status of an LXD operation already recorded) is written to the store at most once per `progress_interval`
per job, everything else at once.

At start-up `recover()` claims the jobs a dead gateway left behind: queued ones run again (they had not started),
running ones are settled by their kind's `recover` function from the state of their resource, never left `running`.

On a shared store (several gateway processes) each process renews the leases of the jobs it runs every
`lease_seconds / 3` (from the start of one renewal to the next, apart from its other upkeep), and at the same pace
claims and settles (as above) the jobs whose lease ran out: those of a process that died, or that stopped renewing.
It is fenced: a job whose lease this process has not renewed for `lease_seconds - fence_margin` (the database
unreachable, the process paused) is abandoned, before another process may claim it: its task is cancelled and
nothing more of it is written or published here. Every write of a job names its owner, and one that finds the job
owned by another process (`LeaseLost`) abandons it the same way. A cancel asked of a process that does not run the
job is marked in the store, and its owner, notified (or at its next renewal), cancels it as if asked itself; waiting
for a job another process runs reads the store until it ends.
Every process serves the stream of every job (`subscribe`; `app.jobs.bus.SharedStreams`): the owner writes its
messages to the store, the others follow them from there with the owner's seq; a job taken over goes on from the
last stored seq (skipping `RECOVERY_SEQ_SKIP` ahead, past any its previous owner published and had not stored), and
the streams of a job this process gives up follow its next owner.
On the embedded store (one process) none of this applies.
A failed or cancelled job's rollback that cannot be done yet (LXD does not answer) is recorded with the job as a
`pending` cleanup and retried with backoff, in this process and after a restart, until it is `done`. On a shared
store a process retries only the pending cleanups of the jobs it owns, and takes over (as its own) those of a
process whose heartbeat ran out; never those of another live process.

When the store cannot write (a full disk), a job's status changes wait, retried, until the write succeeds: what
callers see of a job never runs ahead of what the store holds. Progress that cannot be stored is skipped.

`shutdown(grace)` stops accepting jobs, lets running ones finish within the grace period, and leaves the rest, as they
are, to the next start's recovery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

import structlog

from app.http.errors import ProblemError
from app.jobs.access import EVERYONE, Viewer
from app.jobs.bus import JobBus, JobEvent, MessageLog, SharedStreams, Subscription
from app.jobs.kinds import (
    CancelHook,
    CancelPolicy,
    JobContext,
    JobKind,
    JobKinds,
    RecoveryOutcome,
    RollbackIncomplete,
)
from app.jobs.models import Job, JobCleanup, JobProgress, JobStatus, LxdOperationRef, new_job_id, problem, utcnow
from app.jobs.store import JobStore, LeaseLost, StoredJob
from app.store.datadir import StorageFull
from app.store.errors import StoreUnavailable

log = logging.getLogger("app.jobs")

Claim = tuple[str, ...]
"""What a job reserves while it runs, e.g. ("container", remote, project, name) for a name being created."""
ProblemOf = Callable[[BaseException, str], ProblemError | None]
"""Maps an exception a step raised to the problem it answers (None: an unexpected error); the second argument
names the backend of the job's remote ("LXD" or "Incus") for the problem's words."""


RECOVERY_SEQ_SKIP = 100_000
"""A job settled or run again after its process died or gave it up numbers its messages from the last stored seq
plus this: above any seq a reader may have seen from the previous owner (who publishes before it stores)."""
CLEANUP_FIRST_DELAY = 1.0
CLEANUP_MAX_DELAY = 15.0
"""A pending cleanup is retried after 1, 2, 4... seconds, at most this far apart."""
STORE_RETRY_MAX_DELAY = 5.0
"""A write the store refused for lack of space is retried, at most this far apart, until it succeeds."""
STORED_WAIT_INTERVAL = 0.25
"""How often a wait for a job another process runs reads it from the store."""
MESSAGES_KEPT_AFTER_END = timedelta(minutes=5)
"""The stream messages of a job stay in a shared store this long after it ended (for readers still catching up);
then an ended job's stream is its snapshot and `end`, read from its row."""
MESSAGES_PRUNE_INTERVAL = 60.0
FENCE_CHECK_INTERVAL = 0.25
"""How often (seconds, at most) a process on a shared store checks that the leases of its jobs are still fresh."""


def fence_margin(lease_seconds: float) -> float:
    """How long before its lease runs out a job is abandoned when its lease could not be renewed: a fifth of the
    lease, at least a second (less for very short leases), so that the process stops before another may claim it
    even with its clock a little ahead."""
    return min(max(1.0, lease_seconds / 5), lease_seconds / 2)


class JobCancelled(Exception):
    """Raised by `ctx.checkpoint()` once the job was asked to stop (`rollback-after-step` kinds)."""


class JobFailure(Exception):
    """Raise from a step to fail the job with a precise problem (`slug` names the cause)."""

    def __init__(self, slug: str, detail: str, *, status: int | None = None, title: str | None = None,
                 lxd_error: str | None = None, result: Any = None, **extra: Any) -> None:
        super().__init__(detail)
        self.slug, self.detail, self.status, self.title = slug, detail, status, title
        self.lxd_error, self.result, self.extra = lxd_error, result, extra


class JobNotFound(LookupError):
    pass


class JobAlreadyEnded(RuntimeError):
    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} already ended {job.status.value}")
        self.job = job


class RunnerClosed(RuntimeError):
    """The gateway is shutting down and accepts no new jobs."""


def problem_for(exc: BaseException, *, kind: str, instance: str | None = None,
                problem_of: ProblemOf | None = None, backend: str = "LXD") -> dict[str, Any]:
    """The problem object of a job that failed with `exc` (`problem_of` maps the errors the engine does not know,
    e.g. LXD's); `backend` ("LXD" or "Incus") is what the job's remote is, named in the problem's words."""
    if isinstance(exc, JobFailure):
        return problem(exc.slug, exc.detail, title=exc.title, status=exc.status, lxd_error=exc.lxd_error,
                       instance=instance, **exc.extra)
    mapped = problem_of(exc, backend) if problem_of is not None else None
    if mapped is not None:
        return problem(mapped.slug, mapped.detail, status=mapped.status, lxd_error=mapped.lxd_error,
                       title=mapped.title if mapped.title_given else None, instance=instance, **mapped.extra)
    lxd_message = getattr(exc, "lxd_error", None) or (
        getattr(exc, "message", None) if type(exc).__name__.upper().startswith("LXD") else None)
    if lxd_message:
        return problem("lxd-error", f"{kind}: {backend} refused: {lxd_message}", title=f"{backend} refused", status=502,
                       lxd_error=str(lxd_message), instance=instance)
    if isinstance(exc, TimeoutError):
        return problem("timeout", f"{kind}: timed out", title="Timed out", status=504, instance=instance)
    return problem("internal", f"{kind}: unexpected error: {type(exc).__name__}: {exc}", title="Job failed",
                   status=500, instance=instance)


class _Context(JobContext):
    """What a step sees of its job. All reporting methods are cheap; none blocks on a slow watcher."""

    def __init__(self, runner: JobRunner, active: _Active) -> None:
        self._runner = runner
        self._active = active
        self.params: dict[str, Any] = active.params
        self.checkpoints: dict[str, Any] = dict(active.checkpoints)
        """Steps checkpointed so far (also those of a previous run, when recovering)."""
        self.recovering = active.recovering

    @property
    def services(self) -> dict[str, Any]:
        """What the gateway hands every job (e.g. `remotes`: the `RemoteRegistry`, `settings`)."""
        return self._runner.services

    @property
    def job(self) -> Job:
        return self._active.job.model_copy(deep=True)

    @property
    def job_id(self) -> str:
        return self._active.job.id

    @property
    def remote(self) -> str | None:
        return self._active.job.remote

    @property
    def project(self) -> str | None:
        return self._active.job.project

    @property
    def cancel_requested(self) -> bool:
        return self._active.cancel_requested

    async def progress(self, stage: str | None, percent: int | float | None = None,
                       message: str | None = None) -> None:
        """Report progress (LXD's progress passes through here)."""
        if self._active.finished or self._runner.fence_passed(self._active):
            return
        pct = None if percent is None else max(0, min(100, int(percent)))
        self._active.job.progress = JobProgress(stage=stage, percent=pct, message=message)
        self._runner._bus.publish(self._active.job, "progress", self._active.job.progress.model_dump())
        try:
            await self._runner._persist(self._active, throttled=True)  # in the background: never waits for the disk
        except (StorageFull, StoreUnavailable) as exc:  # the next status change stores it
            log.warning("progress of job %s not stored: %s", self._active.job.id, exc.reason)

    async def output(self, stream: str, data: str | bytes) -> None:
        """Stream output (e.g. an exec's stdout/stderr); text as text, bytes as base64."""
        if self._active.finished or self._runner.fence_passed(self._active):
            return
        payload: dict[str, Any] = {"stream": stream}
        if isinstance(data, bytes):
            try:
                payload["text"] = data.decode("utf-8")
            except UnicodeDecodeError:
                payload["b64"] = base64.b64encode(data).decode("ascii")
        else:
            payload["text"] = data
        self._runner._bus.publish(self._active.job, "output", payload)

    async def record_operation(self, remote: str, op_id: str, status: str = "Running") -> None:
        """Record an LXD operation the job started (or its new status); kept with the job for good.

        A new operation is stored before this returns (which operations a job started survives any crash). A new
        status of one already recorded goes on the bus at once and is stored like progress: with the job's next
        write, at most `progress_interval` later and at the latest with its end."""
        if self._runner.fence_passed(self._active):
            raise LeaseLost(self._active.job.id)
        job = self._active.job
        for op in job.lxd_operations:
            if op.id == op_id and op.remote == remote:
                op.status = status
                known = True
                break
        else:
            job.lxd_operations.append(LxdOperationRef(id=op_id, remote=remote, status=status))
            known = False
        if self._active.finished:
            await self._runner._durably(lambda: self._runner._persist(self._active))
            return
        self._runner._bus.publish(job, "status", {"lxd_operation": {"id": op_id, "remote": remote,
                                                                     "status": status}})
        if known:
            await self._runner._persist(self._active, throttled=True)
        else:
            await self._runner._durably(lambda: self._runner._persist(self._active))

    async def set_resource(self, resource: str) -> None:
        self._active.job.resource = resource
        await self._runner._durably(lambda: self._runner._persist(self._active))

    async def checkpoint(self, step: str, data: Any = None) -> None:
        """Record that `step` is done (with what recovery or rollback needs to know). Raises `JobCancelled` when
        the job was asked to stop."""
        await self._runner._durably(lambda: self._runner._save_checkpoint(self._active, step, data))
        self.checkpoints[step] = data
        self._active.checkpoints[step] = data
        self.raise_if_cancelled()

    def raise_if_cancelled(self) -> None:
        if self._active.cancel_requested and not self._active.rolling_back:
            raise JobCancelled(self._active.job.id)

    def on_cancel(self, hook: CancelHook) -> Callable[[], None]:
        """Run `hook()` when the job is cancelled (kill the process, cancel LXD's operation...). Returns a function
        that unregisters it (call it once the thing it would cancel is over). Registered after the cancel request,
        it runs at once."""
        hooks = self._active.hooks
        hooks.append(hook)
        if self._active.cancel_requested:
            self._runner._spawn(self._runner._run_hook(self._active, hook))

        def unregister() -> None:
            with contextlib.suppress(ValueError):
                hooks.remove(hook)

        return unregister


class _Active:
    def __init__(self, job: Job, kind: JobKind | None, params: dict[str, Any], checkpoints: dict[str, Any],
                 *, recovering: bool = False) -> None:
        self.job = job
        self.kind = kind
        self.params = params
        self.checkpoints = checkpoints
        self.recovering = recovering
        self.task: asyncio.Task[None] | None = None
        self.started = False
        self.finished = False
        self.rolling_back = False
        self.cancel_requested = False
        self.hooks: list[CancelHook] = []
        self.done = asyncio.Event()
        self.save_lock = asyncio.Lock()
        self.last_persist = 0.0
        self.claim: Claim | None = None
        self.flush: asyncio.TimerHandle | None = None
        self.fence = float("inf")
        """(monotonic) When this process stops working on the job unless its lease is renewed before (a shared
        store only)."""
        self.abandoned = False
        """The job's lease was lost: nothing more of it is written or published here."""


class JobRunner:
    """Runs jobs; one per gateway process."""

    def __init__(self, store: JobStore, bus: JobBus, *, kinds: JobKinds, problem_of: ProblemOf | None = None,
                 concurrency_per_remote: int = 32, progress_interval: float = 1.0, lease_seconds: float = 60.0,
                 recovery_timeout: float = 50.0, retention: timedelta = timedelta(days=7),
                 owner_id: str | None = None) -> None:
        self._store = store
        self._bus = bus
        self.kinds = kinds
        self.problem_of = problem_of
        """Maps what a failed step raised to its problem (the app hands `app.http.errors.problem_of`)."""
        self.backend_of: Callable[[str], str] | None = None
        """"LXD" or "Incus": what a remote (by name) is, for the words of a failed job's problem."""
        self.concurrency = concurrency_per_remote
        self.progress_interval = progress_interval
        self.lease_seconds = lease_seconds
        self.recovery_timeout = recovery_timeout
        self.retention = retention
        self.owner_id = owner_id or uuid.uuid4().hex
        self.shared = bool(getattr(store, "shared", False))
        """Several processes share the store: leases are renewed, fenced, and those that ran out taken over."""
        self.fence_margin = fence_margin(lease_seconds)
        self.takeover_interval = max(0.5, lease_seconds / 3)
        """How often leases are renewed and those that ran out claimed (a shared store)."""
        self.streams: SharedStreams | None = None
        """On a shared store that keeps stream messages: every process serves the streams of every job."""
        if self.shared and hasattr(store, "append_messages"):
            self.streams = SharedStreams(bus, cast(MessageLog, store), self.owner_id,
                                         progress_interval=max(progress_interval, 1.0))
        self.on_finished: Callable[[Job], None] | None = None
        """Called with each job as it ends (metrics)."""
        self.before_end: Callable[[Job, dict[str, Any], JobStatus, Any], None] | None = None
        """Called with each job, its params, the status and result it ends with, before its end is stored and
        announced (the read model is told what the job may have changed, so that a read after the end shows
        it)."""
        self.services: dict[str, Any] = {}
        """Shared objects job steps reach through `ctx.services` (set by the app before `start()`)."""
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._active: dict[str, _Active] = {}
        self._claims: dict[Claim, str | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._accepting = True
        self._abandoning = False
        self._maintenance: asyncio.Task[None] | None = None
        self._fencing: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._cleaner: asyncio.Task[None] | None = None
        self._cleanups: dict[str, float] = {}
        """Jobs with a pending cleanup: when (monotonic) to try again."""
        self._cleanup_wake = asyncio.Event()
        self._stopping = asyncio.Event()
        """Set when the process begins to stop: waits for jobs answer at once with the job as it is."""

    @property
    def store(self) -> JobStore:
        return self._store

    @property
    def bus(self) -> JobBus:
        return self._bus

    @property
    def accepting(self) -> bool:
        return self._accepting

    def claim(self, key: Claim) -> str | None:
        """Reserve `key` (e.g. a name being created) for a job about to be submitted with `claim=key`.
        Returns None when reserved, else who holds it: the id of the unfinished job, or "" for a request that
        reserved it and has not submitted its job yet. A reservation not passed to `submit` must be released."""
        if key in self._claims:
            return self._claims[key] or ""
        self._claims[key] = None
        return None

    def release(self, key: Claim) -> None:
        """Give up a reservation whose job was never submitted."""
        if key in self._claims and self._claims[key] is None:
            del self._claims[key]

    def unfinished_count(self, token_id: str) -> int:
        """Jobs of one token (by its id) that are queued or running in this process."""
        return sum(1 for a in self._active.values() if not a.finished and a.job.token_id == token_id)

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Prune old jobs, recover those a dead gateway left, and keep leases fresh. Returns the recovered ids."""
        await self.prune()
        if self.streams is not None:  # before any job runs: each message of each is written
            await self.streams.start()
        recovered = await self.recover()
        self._maintenance = asyncio.create_task(self._maintain(), name="jobs-maintenance")
        if self.shared:
            self._fencing = asyncio.create_task(self._fence_loop(), name="jobs-fencing")
            self._renewing = asyncio.create_task(self._renew_loop(), name="jobs-renewing")
            await self._store.listen_cancels(self._cancel_asked)
        await self.claim_cleanups()
        self._cleaner = asyncio.create_task(self._clean_up(), name="jobs-cleanup")
        return recovered

    async def prune(self) -> int:
        count = await self._store.prune(utcnow() - self.retention)
        await self._store.idempotency_prune(time.time())
        if count:
            log.info("pruned %d finished jobs older than %s", count, self.retention)
        return count

    async def _maintain(self) -> None:
        last_prune = last_messages_prune = time.monotonic()
        while True:
            await asyncio.sleep(self.takeover_interval if self.shared else max(1.0, self.lease_seconds / 3))
            try:
                if self.shared:
                    await self.take_over()
                    await self.claim_cleanups()
                    for job_id in await self._store.cancel_requests(self.owner_id):
                        self._cancel_asked(job_id)
                else:
                    await self._store.renew_leases(self.owner_id, time.time() + self.lease_seconds)
                if self.streams is not None and time.monotonic() - last_messages_prune > MESSAGES_PRUNE_INTERVAL:
                    last_messages_prune = time.monotonic()
                    await self.streams.store.prune_messages(utcnow() - MESSAGES_KEPT_AFTER_END)
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    await self.prune()
            except StoreUnavailable as exc:
                log.warning("job maintenance: the job store is unreachable: %s", exc.reason)
            except Exception:  # keep maintaining: a transient store error must not stop leases
                log.exception("job maintenance failed")

    async def _renew_loop(self) -> None:
        """Renew every `takeover_interval` (a shared store), counted from the start of one renewal to the next and
        apart from the other maintenance: a slow database, or a slow take-over, does not space renewals out past
        the fence."""
        while True:
            started = time.monotonic()
            try:
                await self.renew()
            except StoreUnavailable as exc:
                log.warning("renewing job leases: the job store is unreachable: %s", exc.reason)
            except Exception:  # keep renewing: a transient store error must not stop leases
                log.exception("renewing job leases failed")
            await asyncio.sleep(max(0.0, self.takeover_interval - (time.monotonic() - started)))

    async def renew(self) -> None:
        """Renew the leases of the jobs this process runs (a shared store). A job whose lease is not renewed, because
        another process owns it now, is abandoned; the fence of those renewed moves on."""
        self.check_fences()
        ids = [job_id for job_id, a in self._active.items() if not a.abandoned]
        started = time.monotonic()
        renewed = set(await self._store.renew_leases(self.owner_id, time.time() + self.lease_seconds, ids))
        for job_id in ids:
            active = self._active.get(job_id)
            if active is None or active.abandoned:
                continue
            if job_id in renewed:
                active.fence = max(active.fence, started + self.lease_seconds - self.fence_margin)
            elif not active.finished:  # another process owns it now (an end being stored is no longer unfinished)
                self._abandon(active, "another gateway process owns it now")

    def check_fences(self) -> int:
        """Abandon the jobs whose lease this process could not renew in time; returns how many."""
        now = time.monotonic()
        late = [a for a in self._active.values() if not a.abandoned and a.fence <= now]
        for active in late:
            self._abandon(active, f"its lease could not be renewed for {self.lease_seconds - self.fence_margin:.1f}s")
        return len(late)

    async def _fence_loop(self) -> None:
        interval = min(FENCE_CHECK_INTERVAL, self.fence_margin / 4)
        while True:
            await asyncio.sleep(interval)
            self.check_fences()

    async def take_over(self) -> list[str]:
        """Claim the jobs whose lease ran out (their process died or stopped renewing) and settle them, as at
        start-up (a shared store). Returns their ids."""
        if not self._accepting:
            return []
        started = time.monotonic()
        claimed = await self._store.claim_expired(self.owner_id, time.time() + self.lease_seconds)
        await self._last_messages(claimed)
        adopted = self._adopt(claimed, started)
        if adopted:
            log.info("took over %d jobs whose lease ran out: %s", len(adopted), ", ".join(adopted))
        return adopted

    def _cancel_asked(self, job_id: str) -> None:
        """Another process asked to cancel a job (a shared store): cancel it if it runs here."""
        active = self._active.get(job_id)
        if active is not None and not active.finished and not active.cancel_requested and not active.recovering:
            log.info("job %s: cancel asked through another gateway process", job_id)
            self._spawn(self._cancel_quietly(job_id))

    async def _cancel_quietly(self, job_id: str) -> None:
        with contextlib.suppress(JobNotFound, JobAlreadyEnded):
            await self.cancel(job_id)

    def _abandon(self, active: _Active, why: str) -> None:
        """Stop working on a job this process no longer owns (or may no longer own): cancel its task, write and
        publish nothing more of it (its watchers here are closed; the job is read from the store)."""
        if active.abandoned:
            return
        job = active.job
        active.abandoned = True
        active.finished = True
        if active.flush is not None:
            active.flush.cancel()
            active.flush = None
        if self._active.get(job.id) is active:
            del self._active[job.id]
        if active.claim is not None:
            self._claims.pop(active.claim, None)
        if self.streams is not None:  # its watchers here follow it from the database, under its next owner
            self.streams.forget(job.id)
            self._bus.drop(job.id, follow=True)
        else:
            self._bus.drop(job.id)
        log.warning("job %s (%s) abandoned: %s; this process writes nothing more of it", job.id, job.kind, why)
        task = active.task
        if task is not None and not task.done():
            task.cancel()
        active.done.set()

    def stop_waiting(self) -> None:
        """The process begins to stop: callers waiting for jobs to end (`?wait=`) get the job as it is now, before
        the server gives up on their requests."""
        self._stopping.set()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting jobs, give running ones `grace` seconds, leave the rest to the next start's recovery."""
        self._accepting = False
        self.stop_waiting()
        running = [a.task for a in self._active.values() if a.task is not None and not a.task.done()]
        if running and grace > 0:
            log.info("waiting up to %.0fs for %d running jobs", grace, len(running))
            await asyncio.wait(running, timeout=grace)
        self._abandoning = True
        left = [t for t in self._tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            log.warning("%d jobs left for recovery at the next start", len(left))
            await asyncio.gather(*left, return_exceptions=True)
        for active in list(self._active.values()):
            if not active.finished:
                with contextlib.suppress(Exception):
                    await self._persist(active)
        for task in (self._maintenance, self._cleaner, self._fencing, self._renewing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.streams is not None:
            await self.streams.stop()
        with contextlib.suppress(Exception):
            await self._store.renew_leases(self.owner_id, time.time())
        self._bus.close_all()

    # -- reading ------------------------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        active = self._active.get(job_id)
        if active is not None:
            return active.job.model_copy(deep=True)
        return await self._store.get(job_id)

    async def subscribe(self, job_id: str, *, after: int | None = None,
                        viewer: Viewer = EVERYONE) -> tuple[Subscription, list[JobEvent]] | None:
        """Watch a job that has not ended, as `JobBus.subscribe`: one this process runs, or on a shared store one
        another process runs (followed from the database). None when it has ended or does not exist (or `viewer`
        may not see it): read it from the store."""
        subscribed = self._bus.subscribe(job_id, after=after, viewer=viewer)
        if subscribed is not None or self.streams is None or self._bus.carries(job_id):
            return subscribed
        if not await self.streams.follow(job_id):
            return None
        subscribed = self._bus.subscribe(job_id, after=after, viewer=viewer)
        if subscribed is None:  # `viewer` may not see it
            self._bus.let_go(job_id)
        return subscribed

    async def params(self, job_id: str) -> dict[str, Any] | None:
        """What the job was asked to do (its params), or None when there is no such job."""
        active = self._active.get(job_id)
        if active is not None:
            return copy.deepcopy(active.params)
        stored = await self._store.load(job_id)
        return stored.params if stored is not None else None

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once it has ended, or as it is after `timeout` seconds."""
        active = self._active.get(job_id)
        if active is None and self.shared and timeout > 0:
            return await self._wait_stored(job_id, timeout)
        if active is not None and timeout > 0 and not self._stopping.is_set():
            ended, stopping = asyncio.ensure_future(active.done.wait()), asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait((ended, stopping), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                stopping.cancel()
            if active.abandoned:  # another process owns it now: the store says what it is
                return await self._store.get(job_id)
            return active.job.model_copy(deep=True)
        return await self.get(job_id)

    async def _wait_stored(self, job_id: str, timeout: float) -> Job | None:
        """Wait for a job another process runs (a shared store): read it from the store until it has ended."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self._store.get(job_id)
            left = deadline - time.monotonic()
            if job is None or job.ended or left <= 0 or self._stopping.is_set():
                return job
            if job_id in self._active:  # taken over here meanwhile
                return await self.wait(job_id, left)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(STORED_WAIT_INTERVAL, left))

    # -- submitting and cancelling ------------------------------------------------------------------------------

    async def submit(self, kind: str, *, params: dict[str, Any] | None = None, remote: str | None = None,
                     project: str | None = None, resource: str | None = None, requested_by: str | None = None,
                     request_id: str | None = None, token_id: str | None = None, claim: Claim | None = None) -> Job:
        """Create a queued job of a registered kind and start it (as soon as its remote has a free slot).
        `requested_by` names the token that asks; `token_id` is its stable id, to which the job's params and
        output belong. The job holds `claim` (reserved with `claim()` before) until it ends."""
        if not self._accepting:
            raise RunnerClosed("the gateway is shutting down")
        job_kind = self.kinds.get(kind)
        job = Job(id=new_job_id(), kind=kind, status=JobStatus.queued, remote=remote, project=project,
                  resource=resource, created_at=utcnow(), requested_by=requested_by, token_id=token_id)
        params = dict(params or {})
        started = time.monotonic()
        await self._store.insert(job, params=params, owner_id=self.owner_id,
                                 lease_until=time.time() + self.lease_seconds, request_id=request_id)
        active = _Active(job, job_kind, params, {})
        if self.shared:
            active.fence = started + self.lease_seconds - self.fence_margin
        if claim is not None:
            active.claim = claim
            self._claims[claim] = job.id
        self._track(active)
        active.task = self._spawn(self._run(active), name=f"job-{job.id}")
        return job.model_copy(deep=True)

    async def cancel(self, job_id: str) -> Job:
        """Ask a job to stop, per its kind's cancel policy. Returns the job as it is now."""
        active = self._active.get(job_id)
        if active is None:
            job = await self._store.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            if not job.ended and await self._store.request_cancel(job_id):
                # Another process runs it (a shared store): its owner hears of the cancel and acts on it.
                log.info("job %s: cancel passed on to the gateway process running it", job_id)
                return await self._store.get(job_id) or job
            raise JobAlreadyEnded(await self._store.get(job_id) or job)
        if active.finished:
            if active.job.ended:
                raise JobAlreadyEnded(active.job.model_copy(deep=True))
            return active.job.model_copy(deep=True)  # its end is being stored
        if not active.cancel_requested and not active.recovering:
            active.cancel_requested = True
            if not active.started:
                # A queued job never starts: stop its task (it may not have run yet) and end it here.
                task = active.task
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.wait([task])
                if not active.finished:
                    await self._finish(active, JobStatus.cancelled)
            else:
                self._bus.publish(active.job, "status", {"cancel_requested": True})
                assert active.kind is not None
                policy = active.kind.cancel
                for hook in list(active.hooks):
                    self._spawn(self._run_hook(active, hook))
                if policy is CancelPolicy.INTERRUPT and active.task is not None:
                    active.task.cancel()
                elif active.kind.cancel_timeout is not None:
                    self._spawn(self._force_after(active, active.kind.cancel_timeout))
            await asyncio.sleep(0)
        return active.job.model_copy(deep=True)

    async def _run_hook(self, active: _Active, hook: CancelHook) -> None:
        try:
            await asyncio.wait_for(hook(), 30)
        except Exception:
            log.exception("cancel hook of job %s failed", active.job.id)

    async def _force_after(self, active: _Active, delay: float) -> None:
        await asyncio.sleep(delay)
        if not active.finished and active.task is not None and not active.rolling_back:
            log.warning("job %s did not stop %.0fs after cancel: interrupting it", active.job.id, delay)
            active.task.cancel()

    # -- recovery -----------------------------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Claim the jobs a dead gateway left: run queued ones, settle running ones (in the background)."""
        started = time.monotonic()
        claimed = await self._store.claim_unfinished(self.owner_id, time.time() + self.lease_seconds)
        await self._last_messages(claimed)
        self._adopt(claimed, started)
        if claimed:
            log.info("recovering %d jobs left by a previous gateway process", len(claimed))
        return [s.job.id for s in claimed]

    async def _last_messages(self, claimed: list[StoredJob]) -> None:
        """The seq each claimed job goes on from: the last of its stored messages, when it is after its row's."""
        if self.streams is None or not claimed:
            return
        seqs = await self.streams.store.last_message_seqs([s.job.id for s in claimed])
        for stored in claimed:
            stored.seq = max(stored.seq, seqs.get(stored.job.id, 0))

    def _adopt(self, claimed: list[StoredJob], started: float) -> list[str]:
        """Run the claimed queued jobs, settle the running ones (in the background). `started` (monotonic) is when
        the claim was asked: the leases run from then."""
        adopted: list[str] = []
        for stored in claimed:
            if stored.job.id in self._active:  # already ours, and running here
                continue
            adopted.append(stored.job.id)
            kind = self.kinds.find(stored.job.kind)
            if stored.job.status is JobStatus.queued and kind is not None:
                active = _Active(stored.job, kind, stored.params, stored.checkpoints)
                self._track(active, seq=stored.seq)
                active.task = self._spawn(self._run(active), name=f"job-{stored.job.id}")
            else:
                active = _Active(stored.job, kind, stored.params, stored.checkpoints, recovering=True)
                active.started = True
                # Messages after the last stored one died with the old process: skip ahead so that no sequence
                # number is ever used twice for a job.
                self._track(active, seq=stored.seq + RECOVERY_SEQ_SKIP)
                active.task = self._spawn(self._recover(active, stored), name=f"recover-{stored.job.id}")
            if self.shared:
                active.fence = started + self.lease_seconds - self.fence_margin
        return adopted

    async def _recover(self, active: _Active, stored: StoredJob) -> None:
        job = active.job
        structlog.contextvars.bind_contextvars(job_id=job.id, job_kind=job.kind)
        ctx = _Context(self, active)
        try:
            if active.kind is None:
                outcome = RecoveryOutcome.failed("gateway-restarted", f"the gateway stopped while this job ran and "
                                                 f"no job kind {job.kind!r} is registered to settle it")
            elif active.kind.recover is None:
                outcome = RecoveryOutcome.failed("gateway-restarted", "the gateway stopped while this job ran; "
                                                 "its outcome is unknown")
            else:
                await ctx.progress("recovering", None, "the gateway restarted: settling the job from the state "
                                   "of its resource")
                outcome = await asyncio.wait_for(active.kind.recover(job.model_copy(deep=True), ctx),
                                                 self.recovery_timeout)
        except asyncio.CancelledError:
            if self._abandoning or active.abandoned:
                raise
            outcome = RecoveryOutcome.failed("gateway-restarted", "recovery was interrupted")
        except LeaseLost:
            self._abandon(active, "another gateway process owns it now")
            return
        except Exception as exc:
            if active.abandoned:
                return
            error = problem_for(exc, kind=job.kind, instance=f"/v1/jobs/{job.id}", problem_of=self.problem_of,
                                backend=self._backend(job.remote))
            outcome = RecoveryOutcome(JobStatus.failed,
                                      error={**error, "detail": f"recovery after a restart failed: {error['detail']}"})
            await self._rollback(active, ctx)  # what the dead process left half-made is undone, now or later
        if outcome.status not in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            outcome = RecoveryOutcome.failed("gateway-restarted", f"recovery answered {outcome.status}")
        error = outcome.error
        if error is not None:
            error = {**error, "instance": error.get("instance") or f"/v1/jobs/{job.id}"}
        await self._finish(active, outcome.status, result=outcome.result, error=error)

    # -- running ------------------------------------------------------------------------------------------------

    def _track(self, active: _Active, seq: int = 0) -> None:
        self._active[active.job.id] = active
        self._bus.open(active.job, seq)

    def _spawn(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _slot(self, remote: str | None) -> asyncio.Semaphore:
        key = remote or ""
        if key not in self._slots:
            self._slots[key] = asyncio.Semaphore(self.concurrency)
        return self._slots[key]

    async def _run(self, active: _Active) -> None:
        job = active.job
        kind = active.kind
        assert kind is not None
        # Every log line of this job (its task's own context) carries the job id, and the request id it came with.
        structlog.contextvars.bind_contextvars(job_id=job.id, job_kind=job.kind)
        log.info("job %s (%s) started", job.id, job.kind)
        instance = f"/v1/jobs/{job.id}"
        try:
            async with self._slot(job.remote):
                if active.cancel_requested:
                    raise asyncio.CancelledError
                active.started = True
                started = utcnow()

                def running(j: Job) -> None:
                    j.status, j.started_at = JobStatus.running, started

                await self._durably(lambda: self._save_as(active, running))
                running(job)
                self._bus.publish(job, "status", {"status": job.status.value})
                ctx = _Context(self, active)
                try:
                    result = await kind.run(ctx)
                except LeaseLost:
                    raise
                except (JobCancelled, asyncio.CancelledError) as exc:
                    if self._abandoning or active.abandoned or not active.cancel_requested:
                        if isinstance(exc, asyncio.CancelledError):
                            raise
                        await self._fail(active, ctx, JobFailure("internal", "the job stopped itself"))
                        return
                    await self._rollback(active, ctx)
                    await self._finish(active, JobStatus.cancelled)
                except Exception as exc:
                    if active.abandoned:
                        return
                    await self._fail(active, ctx, exc)
                else:
                    if active.cancel_requested:
                        await self._rollback(active, ctx)
                        await self._finish(active, JobStatus.cancelled, result=result)
                    else:
                        await self._finish(active, JobStatus.succeeded, result=result)
        except asyncio.CancelledError:
            if self._abandoning or active.abandoned:
                raise
            if not active.finished:
                await self._finish(active, JobStatus.cancelled)
        except LeaseLost:
            self._abandon(active, "another gateway process owns it now")
        except Exception as exc:  # a bug in the runner itself: never leave the job running
            log.exception("job %s crashed the runner", job.id)
            if not active.finished:
                await self._finish(active, JobStatus.failed, error=problem_for(exc, kind=job.kind,
                                                                                instance=instance,
                                                                                problem_of=self.problem_of,
                                                                                backend=self._backend(job.remote)))

    def _backend(self, remote: str | None) -> str:
        if self.backend_of is None or not remote:
            return "LXD"
        try:
            return self.backend_of(remote)
        except Exception:  # a remote removed meanwhile: the words matter less than the failure itself
            return "LXD"

    async def _fail(self, active: _Active, ctx: JobContext, exc: BaseException) -> None:
        if not isinstance(exc, JobFailure):
            log.info("job %s (%s) failed: %r", active.job.id, active.job.kind, exc)
        error = problem_for(exc, kind=active.job.kind, instance=f"/v1/jobs/{active.job.id}",
                            problem_of=self.problem_of, backend=self._backend(active.job.remote))
        await self._rollback(active, ctx)
        result = exc.result if isinstance(exc, JobFailure) else None
        await self._finish(active, JobStatus.failed, error=error, result=result)

    async def _rollback(self, active: _Active, ctx: JobContext) -> None:
        kind = active.kind
        if kind is None or kind.rollback is None or active.abandoned:
            return
        active.rolling_back = True
        await ctx.progress("rolling back", None, None)
        active.job.cleanup = await self._attempt_cleanup(kind, ctx, active.job.cleanup)
        if active.job.cleanup is not None and active.job.cleanup.status == "pending":
            self._cleanups[active.job.id] = time.monotonic() + CLEANUP_FIRST_DELAY
            self._cleanup_wake.set()

    async def _attempt_cleanup(self, kind: JobKind, ctx: JobContext, before: JobCleanup | None) -> JobCleanup | None:
        """Run the kind's rollback once; what the job's `cleanup` says after it (None: nothing needed undoing)."""
        assert kind.rollback is not None
        attempts = (before.attempts if before is not None else 0) + 1
        try:
            done = await asyncio.wait_for(kind.rollback(ctx), self.recovery_timeout)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("rollback of job %s not done (attempt %d): %s", ctx.job_id, attempts, reason)
            detail = reason if isinstance(exc, RollbackIncomplete) else (
                f"undoing what the job did failed ({reason}); it is retried until it succeeds")
            cause = exc.__cause__ if isinstance(exc, RollbackIncomplete) and exc.__cause__ else exc
            return JobCleanup(status="pending", detail=detail, attempts=attempts,
                              last_error=str(cause) or type(cause).__name__, updated_at=utcnow())
        if done is None and before is None:
            return None
        return JobCleanup(status="done", detail=done or "nothing was left to undo", attempts=attempts,
                          updated_at=utcnow())

    async def claim_cleanups(self) -> list[str]:
        """Find the pending cleanups this process is to retry, and retry them from now on: all of them on the
        embedded store; on a shared store those of the jobs it owns, and those a replica no longer alive left
        (they become this process's), never another live replica's. Returns the ids newly found."""
        claim = getattr(self._store, "claim_pending_cleanups", None)
        if self.shared and claim is not None:
            pending = await claim(self.owner_id, time.time())
        else:
            pending = await self._store.pending_cleanups()
        found = [s.job.id for s in pending if s.job.id not in self._cleanups]
        for job_id in found:
            self._cleanups[job_id] = 0.0
        if found:
            self._cleanup_wake.set()
        return found

    async def _clean_up(self) -> None:
        """Retry pending cleanups, each with its own backoff, until they are done."""
        while True:
            now = time.monotonic()
            due = [job_id for job_id, at in self._cleanups.items() if at <= now and job_id not in self._active]
            for job_id in due:
                try:
                    await self._retry_cleanup(job_id)
                except Exception as exc:  # the store itself failed: try again later
                    log.warning("retrying the cleanup of job %s failed: %s", job_id, exc)
                    self._cleanups[job_id] = time.monotonic() + CLEANUP_MAX_DELAY
            if not self._cleanups:
                self._cleanup_wake.clear()
                await self._cleanup_wake.wait()
                continue
            delay = max(0.25, min(self._cleanups.values()) - time.monotonic())
            self._cleanup_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cleanup_wake.wait(), delay)

    async def _retry_cleanup(self, job_id: str) -> None:
        stored = await self._store.load(job_id)
        kind = self.kinds.find(stored.job.kind) if stored is not None else None
        if stored is None or stored.job.cleanup is None or stored.job.cleanup.status != "pending" or (
                kind is None or kind.rollback is None) or (self.shared and stored.owner_id != self.owner_id):
            self._cleanups.pop(job_id, None)  # done, or another replica's now
            return
        active = _Active(stored.job, kind, stored.params, stored.checkpoints)
        active.started = active.finished = active.rolling_back = True
        ctx = _Context(self, active)
        cleanup = await self._attempt_cleanup(kind, ctx, stored.job.cleanup)
        stored.job.cleanup = cleanup
        try:
            await self._store.save(stored.job, seq=stored.seq, owner_id=self.owner_id if self.shared else None)
        except LeaseLost:
            self._cleanups.pop(job_id, None)
            log.warning("the cleanup of job %s is another gateway process's now", job_id)
            return
        if cleanup is not None and cleanup.status == "pending":
            delay = min(CLEANUP_MAX_DELAY, CLEANUP_FIRST_DELAY * 2 ** min(cleanup.attempts - 1, 10))
            self._cleanups[job_id] = time.monotonic() + delay
        else:
            self._cleanups.pop(job_id, None)
            log.info("cleanup of job %s done: %s", job_id, cleanup.detail if cleanup else "nothing to undo")

    async def _finish(self, active: _Active, status: JobStatus, *, result: Any = None,
                      error: dict[str, Any] | None = None) -> None:
        job = active.job
        if active.abandoned:
            return
        active.finished = True
        if active.flush is not None:
            active.flush.cancel()
        finished = utcnow()
        if self.before_end is not None:
            try:
                self.before_end(job, active.params, status, result)
            except Exception:
                log.exception("before_end hook failed for job %s", job.id)

        def end(j: Job) -> None:
            j.status, j.finished_at, j.result, j.error = status, finished, result, error
            if status is JobStatus.succeeded:
                j.progress = JobProgress(stage="done", percent=100, message=j.progress.message)

        try:
            # Callers see the end once the store holds it (a full disk delays both alike), never before: a client
            # that saw `end` acts on it at once (reads the job back, reuses the name, retries its Idempotency-Key),
            # and a process dying between publishing and storing would leave a job a client saw end `running` in
            # the store, for recovery to settle again, maybe otherwise (an exec seen succeeded would turn failed).
            # The write is one hop to the writer thread and no fsync: the wait is short.
            await self._durably(lambda: self._save_as(active, end, seq=self._bus.seq(job.id) + 1))
        except asyncio.CancelledError:
            if self._abandoning or active.abandoned:  # the next start's recovery settles it from the store
                raise
        except LeaseLost:
            self._abandon(active, "another gateway process owns it now")
            return
        except Exception:
            log.exception("could not store the end of job %s", job.id)
        if active.abandoned:
            return
        end(job)
        self._bus.publish(job, "end")
        log.info("job %s (%s) %s", job.id, job.kind, status.value)
        active.done.set()
        self._active.pop(job.id, None)
        if active.claim is not None:
            self._claims.pop(active.claim, None)
        if self.on_finished is not None:
            try:
                self.on_finished(job)
            except Exception:
                log.exception("on_finished hook failed for job %s", job.id)

    async def _persist(self, active: _Active, *, throttled: bool = False, seq: int | None = None,
                       background: bool = False) -> None:
        """Store the job as it is now. `throttled`: never wait for it; it is written in the background, at most
        once per `progress_interval` (the step goes on at once). A `background` write is left out once the job's
        end is being stored (that write holds everything, and must not be overwritten)."""
        if throttled:
            if active.flush is None:
                delay = max(0.0, self.progress_interval - (time.monotonic() - active.last_persist))
                active.flush = asyncio.get_running_loop().call_later(delay, self._flush_later, active)
            return
        if active.flush is not None:
            active.flush.cancel()
            active.flush = None
        async with active.save_lock:
            if background and active.finished and not active.job.ended:
                return
            self._owned(active)
            active.last_persist = time.monotonic()
            await self._owned_write(active, self._store.save(
                active.job, seq=self._bus.seq(active.job.id) if seq is None else seq, **self._owner()))

    async def _save_as(self, active: _Active, change: Callable[[Job], None], *, seq: int | None = None) -> None:
        """Store the job as `change` makes it, without changing what callers see yet. (A shallow copy does: `change`
        sets fields, never changes one in place; what the copy shares with the job, its operation list, only ever
        gets newer.)"""
        job = active.job.model_copy()
        change(job)
        async with active.save_lock:
            self._owned(active)
            active.last_persist = time.monotonic()
            await self._owned_write(active, self._store.save(
                job, seq=self._bus.seq(job.id) if seq is None else seq, **self._owner()))

    async def _save_checkpoint(self, active: _Active, step: str, data: Any) -> None:
        self._owned(active)
        await self._owned_write(active, self._store.save_checkpoint(active.job.id, step, data, **self._owner()))

    def _owner(self) -> dict[str, Any]:
        """What a job write passes to the store: its owner, on a shared store (the write then fails with
        `LeaseLost` when another process owns the job)."""
        return {"owner_id": self.owner_id} if self.shared else {}

    def fence_passed(self, active: _Active) -> bool:
        """Whether the job's lease could not be renewed in time (a shared store): it is abandoned then. Checked
        before every write and report of a job, so that a process resuming from a pause stops at its first step,
        whichever of its timers runs first."""
        if self.shared and not active.abandoned and active.fence <= time.monotonic():
            self._abandon(active, "its lease could not be renewed in time")
        return active.abandoned

    def _owned(self, active: _Active) -> None:
        """Before a write of a job: raise `LeaseLost` when it was abandoned, or its fence passed (abandon it)."""
        if self.fence_passed(active):
            raise LeaseLost(active.job.id)

    async def _owned_write(self, active: _Active, write: Awaitable[None]) -> None:
        try:
            await write
        except LeaseLost:
            self._abandon(active, "another gateway process owns it now")
            raise

    async def _durably(self, write: Callable[[], Awaitable[Any]]) -> Any:
        """Run a store write, retrying it (with backoff) while the disk is full or the database unreachable, until it
        succeeds."""
        delay = 0.25
        while True:
            try:
                return await write()
            except (StorageFull, StoreUnavailable) as exc:
                if self._abandoning:
                    raise
                log.warning("the job store cannot write (%s): retrying in %.1fs", exc.reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_DELAY)

    def _flush_later(self, active: _Active) -> None:
        active.flush = None
        if not active.finished:
            self._spawn(self._flush(active))

    async def _flush(self, active: _Active) -> None:
        try:
            await self._persist(active, background=True)
        except LeaseLost:
            pass  # abandoned: nothing more of it is written here
        except (StorageFull, StoreUnavailable) as exc:
            log.warning("progress of job %s not stored: %s", active.job.id, exc.reason)

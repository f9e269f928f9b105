"""The runner with synthetic kinds: outcomes, problems, per-remote limits, cancel policies, recovery, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.jobs.bus import JobBus
from app.jobs.kinds import CancelPolicy, JobKind, JobKinds, RecoveryOutcome
from app.jobs.models import Job, JobStatus
from app.jobs.runner import JobContext, JobFailure, JobRunner, problem_for
from app.jobs.store import JobStore
from tests.support.job_store import new_store


class LXDOperationError(Exception):
    """Shaped like the LXD client's errors: LXD's own text in `message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition with a deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_success_with_progress_operations_and_result(runner: JobRunner, kinds: JobKinds,
                                                           store: JobStore) -> None:
    async def step(ctx: JobContext) -> dict[str, int]:
        await ctx.record_operation("local", "op-1")
        await ctx.progress("Retrieving image", 50, "Retrieving image: 50%")
        await ctx.output("stdout", "hello\n")
        await ctx.record_operation("local", "op-1", "Success")
        await ctx.checkpoint("fetched", {"fp": "abc"})
        return {"n": ctx.params["n"]}

    kinds.register(JobKind("t.ok", step))
    job = await runner.submit("t.ok", params={"n": 3}, remote="local", resource="/v1/things/x")
    assert job.status is JobStatus.queued
    done = await runner.wait(job.id, 5)
    assert done is not None and done.status is JobStatus.succeeded and done.result == {"n": 3}
    assert done.started_at and done.finished_at and done.progress.percent == 100
    assert [o.model_dump() for o in done.lxd_operations] == [{"id": "op-1", "remote": "local", "status": "Success"}]
    stored = await store.load(job.id)
    assert stored is not None and stored.job.status is JobStatus.succeeded
    assert stored.checkpoints == {"fetched": {"fp": "abc"}}


async def test_failure_names_the_cause_and_keeps_lxds_message(runner: JobRunner, kinds: JobKinds) -> None:
    async def lxd_refuses(ctx: JobContext) -> None:
        raise LXDOperationError("Failed instance creation: no space left on device")

    async def precise(ctx: JobContext) -> None:
        raise JobFailure("image-not-found", "no image for focal/amd64 in any source", status=404)

    kinds.register(JobKind("t.lxd", lxd_refuses))
    kinds.register(JobKind("t.precise", precise))
    a = await runner.wait((await runner.submit("t.lxd")).id, 5)
    b = await runner.wait((await runner.submit("t.precise")).id, 5)
    assert a is not None and a.status is JobStatus.failed and a.error is not None
    assert a.error["lxd_error"] == "Failed instance creation: no space left on device"
    assert a.error["type"].endswith("/lxd-error") and a.error["instance"] == f"/v1/jobs/{a.id}"
    assert b is not None and b.error is not None and b.error["type"].endswith("/image-not-found")
    assert b.error["detail"] == "no image for focal/amd64 in any source"


def test_problem_for_unexpected_errors_names_the_kind() -> None:
    body = problem_for(ValueError("bad"), kind="t.x")
    assert body["type"].endswith("/internal") and "t.x" in body["detail"] and "ValueError" in body["detail"]


async def test_concurrency_limit_per_remote(runner: JobRunner, kinds: JobKinds) -> None:
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    release = asyncio.Event()

    async def step(ctx: JobContext) -> None:
        r = ctx.remote or ""
        running[r] = running.get(r, 0) + 1
        peak[r] = max(peak.get(r, 0), running[r])
        await release.wait()
        running[r] -= 1

    kinds.register(JobKind("t.block", step))
    jobs = [await runner.submit("t.block", remote=r) for r in ["a"] * 5 + ["b"] * 3]
    await until(lambda: running.get("a") == 2 and running.get("b") == 2)
    assert (await runner.get(jobs[4].id)).status is JobStatus.queued  # type: ignore[union-attr]
    release.set()
    for j in jobs:
        assert (await runner.wait(j.id, 5)).status is JobStatus.succeeded  # type: ignore[union-attr]
    assert peak == {"a": 2, "b": 2}


async def test_cancel_queued_never_starts(runner: JobRunner, kinds: JobKinds) -> None:
    started: list[str] = []
    gate = asyncio.Event()

    async def step(ctx: JobContext) -> None:
        started.append(ctx.job_id)
        await gate.wait()

    kinds.register(JobKind("t.q", step, cancel=CancelPolicy.INTERRUPT))
    blockers = [await runner.submit("t.q", remote="r") for _ in range(2)]
    queued = await runner.submit("t.q", remote="r")
    await until(lambda: len(started) == 2)
    job = await runner.cancel(queued.id)
    assert job.status is JobStatus.cancelled and job.started_at is None
    gate.set()
    for b in blockers:
        await runner.wait(b.id, 5)
    assert queued.id not in started


async def test_cancel_kill_process_runs_the_hook(runner: JobRunner, kinds: JobKinds) -> None:
    killed = asyncio.Event()

    async def exec_step(ctx: JobContext) -> dict[str, int]:
        async def kill() -> None:
            killed.set()

        ctx.on_cancel(kill)
        await killed.wait()  # the "process" ends once killed
        return {"exit_code": 137}

    kinds.register(JobKind("t.exec", exec_step, cancel=CancelPolicy.KILL_PROCESS))
    job = await runner.submit("t.exec")
    await until(lambda: runner.bus.live(job.id) is not None and runner.bus.live(job.id).status == "running")  # type: ignore[union-attr]
    await runner.cancel(job.id)
    done = await runner.wait(job.id, 5)
    assert killed.is_set() and done is not None and done.status is JobStatus.cancelled
    assert done.result == {"exit_code": 137}


async def test_cancel_rollback_after_step(runner: JobRunner, kinds: JobKinds) -> None:
    steps: list[str] = []
    go = asyncio.Event()

    async def create(ctx: JobContext) -> None:
        steps.append("image")
        await go.wait()
        await ctx.checkpoint("image")  # raises: cancel was requested during this step
        steps.append("create")

    async def rollback(ctx: JobContext) -> None:
        steps.append(f"rollback after {sorted(ctx.checkpoints)}")

    kinds.register(JobKind("t.create", create, cancel=CancelPolicy.ROLLBACK_AFTER_STEP, rollback=rollback))
    job = await runner.submit("t.create")
    await until(lambda: steps == ["image"])
    during = await runner.cancel(job.id)
    assert during.status is JobStatus.running  # it stops after the current step
    go.set()
    done = await runner.wait(job.id, 5)
    assert done is not None and done.status is JobStatus.cancelled
    assert steps == ["image", "rollback after ['image']"]


async def test_cancel_interrupt_and_forced_after_timeout(runner: JobRunner, kinds: JobKinds) -> None:
    async def forever(ctx: JobContext) -> None:
        await asyncio.sleep(3600)

    kinds.register(JobKind("t.int", forever, cancel=CancelPolicy.INTERRUPT))
    kinds.register(JobKind("t.stuck", forever, cancel=CancelPolicy.CANCEL_OPERATION, cancel_timeout=0.1))
    for name in ("t.int", "t.stuck"):
        job = await runner.submit(name)
        await until(lambda j=job: runner.bus.live(j.id) is not None
                    and runner.bus.live(j.id).status == "running")  # type: ignore[union-attr]
        await runner.cancel(job.id)
        done = await runner.wait(job.id, 5)
        assert done is not None and done.status is JobStatus.cancelled


async def test_progress_is_persisted_at_most_once_per_interval(runner: JobRunner, kinds: JobKinds,
                                                                store: JobStore) -> None:
    hold = asyncio.Event()

    async def chatty(ctx: JobContext) -> None:
        for i in range(100):
            await ctx.progress("work", i)
        await hold.wait()

    kinds.register(JobKind("t.chatty", chatty))
    saves = 0
    original = store.save

    async def counting(job: Job, *, seq: int, **owner: Any) -> None:
        nonlocal saves
        saves += 1
        await original(job, seq=seq, **owner)

    store.save = counting  # type: ignore[method-assign]
    job = await runner.submit("t.chatty")
    await until(lambda: runner.bus.live(job.id) is not None
                and runner.bus.live(job.id).progress.percent == 99)  # type: ignore[union-attr]
    assert saves <= 3  # running + first progress (+ maybe one flush)
    await asyncio.sleep(0.35)  # the pending flush writes the latest progress
    assert (await store.get(job.id)).progress.percent == 99  # type: ignore[union-attr]
    hold.set()
    await runner.wait(job.id, 5)


async def test_recovery_settles_running_and_reruns_queued(store_kind: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    kinds = JobKinds()
    gate = asyncio.Event()
    runs: list[str] = []

    async def step(ctx: JobContext) -> str:
        runs.append(ctx.job_id)
        await gate.wait()
        return "ran"

    async def recover(job: Job, ctx: JobContext) -> RecoveryOutcome:
        if ctx.checkpoints.get("started"):
            return RecoveryOutcome.succeeded({"recovered": True})
        return RecoveryOutcome.failed("rolled-back", "not created")

    async def step_cp(ctx: JobContext) -> None:
        await ctx.checkpoint("started", True)
        await gate.wait()

    kinds.register(JobKind("t.rec", step_cp, recover=recover))
    kinds.register(JobKind("t.norec", step))
    kinds.register(JobKind("t.queue", step))
    store = new_store(store_kind, request, tmp_path)
    await store.open()
    first = JobRunner(store, JobBus(), kinds=kinds, concurrency_per_remote=2)
    await first.start()
    a = await first.submit("t.rec", remote="x")
    b = await first.submit("t.norec", remote="x")
    c = await first.submit("t.queue", remote="x")  # waits for a slot
    await until(lambda: len(runs) == 1 and first.bus.live(a.id).status == "running")  # type: ignore[union-attr]
    await asyncio.sleep(0.05)
    await first.shutdown(0)  # like a crash: the jobs stay as they are in the store
    assert (await store.get(a.id)).status is JobStatus.running  # type: ignore[union-attr]
    assert (await store.get(c.id)).status is JobStatus.queued  # type: ignore[union-attr]
    await store.close()

    await store.open()
    second = JobRunner(store, JobBus(), kinds=kinds, concurrency_per_remote=2)
    recovered = await second.start()
    assert set(recovered) == {a.id, b.id, c.id}
    gate.set()
    ra, rb, rc = [await second.wait(j.id, 5) for j in (a, b, c)]
    assert ra.status is JobStatus.succeeded and ra.result == {"recovered": True}  # type: ignore[union-attr]
    assert rb.status is JobStatus.failed and rb.error["type"].endswith("/gateway-restarted")  # type: ignore[union-attr,index]
    assert rc.status is JobStatus.succeeded and rc.result == "ran"  # type: ignore[union-attr]
    await second.shutdown(0)
    await store.close()


async def test_shutdown_gives_running_jobs_the_grace_period(runner: JobRunner, kinds: JobKinds) -> None:
    async def short(ctx: JobContext) -> str:
        await asyncio.sleep(0.2)
        return "finished"

    kinds.register(JobKind("t.short", short))
    job = await runner.submit("t.short")
    await runner.shutdown(5)
    assert (await runner.store.get(job.id)).status is JobStatus.succeeded  # type: ignore[union-attr]
    try:
        await runner.submit("t.short")
    except Exception as exc:
        assert type(exc).__name__ == "RunnerClosed"
    else:
        raise AssertionError("accepted a job while shutting down")


async def test_a_new_operation_is_stored_at_once_and_its_end_goes_out_without_waiting_for_the_store(
        runner: JobRunner, kinds: JobKinds, store: JobStore) -> None:
    seen: dict[str, object] = {}

    async def step(ctx: JobContext) -> dict[str, bool]:
        await ctx.record_operation("local", "op-1")
        stored = await store.load(ctx.job_id)
        assert stored is not None
        seen["stored at once"] = [o.status for o in stored.job.lxd_operations]
        saves = store.save

        async def stuck(job: Job, *, seq: int, **owner: Any) -> None:
            await asyncio.Event().wait()

        store.save = stuck  # type: ignore[method-assign]
        try:  # the new status goes on the bus at once, whatever the store does
            await asyncio.wait_for(ctx.record_operation("local", "op-1", "Success"), 1)
            await asyncio.wait_for(ctx.progress("started", 90, "started"), 1)
        finally:
            store.save = saves  # type: ignore[method-assign]
        live = runner.bus.live(ctx.job_id)
        assert live is not None
        seen["live"] = [o.status for o in live.lxd_operations]
        return {"ok": True}

    kinds.register(JobKind("t.op", step))
    job = await runner.submit("t.op", remote="local")
    done = await runner.wait(job.id, 5)
    assert done is not None and done.status is JobStatus.succeeded, done
    assert seen == {"stored at once": ["Running"], "live": ["Success"]}
    stored = await store.load(job.id)
    assert stored is not None and [o.status for o in stored.job.lxd_operations] == ["Success"]


async def test_progress_is_stored_in_the_background_and_never_over_the_end(
        store_kind: str, request: pytest.FixtureRequest, tmp_path: Path, kinds: JobKinds) -> None:
    store = new_store(store_kind, request, tmp_path)
    await store.open()
    runner = JobRunner(store, JobBus(), kinds=kinds, progress_interval=0.0)
    await runner.start()

    async def step(ctx: JobContext) -> None:
        for i in range(3):
            await ctx.progress("working", i * 30, None)
            for _ in range(i):
                await asyncio.sleep(0)  # let a background write start, or not, before the end

    kinds.register(JobKind("t.progress", step))
    try:
        ids = [(await runner.submit("t.progress")).id for _ in range(30)]
        for job_id in ids:
            await runner.wait(job_id, 5)
        await asyncio.sleep(0.1)
        statuses = {(await store.load(job_id)).job.status for job_id in ids}  # type: ignore[union-attr]
        assert statuses == {JobStatus.succeeded}
    finally:
        await runner.shutdown(0)
        await store.close()

"""Ownership of jobs on a shared store: running processes take over the jobs whose lease ran out, and a process
that cannot renew a lease (or finds its job owned by another) stops working on it and writes nothing more of it.
Runners here are gateway processes in miniature: each its own store on one private PostgreSQL database."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.jobs.bus import JobBus
from app.jobs.kinds import JobKind, JobKinds
from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.jobs.runner import JobContext, JobRunner
from app.jobs.store import JobStore, LeaseLost
from app.store.errors import StoreUnavailable
from app.store.jobs import SQLiteJobStore
from app.store.postgres import PostgresJobStore
from tests.support import replicas as support
from tests.support.replicas import LEASE, started_replicas


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Wait until `check()` holds; returns how long it took."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def job_of(status: JobStatus = JobStatus.running, kind: str = "t.work") -> Job:
    return Job(id=new_job_id(), kind=kind, status=status, created_at=utcnow(), started_at=utcnow())


class Replica(support.Replica):
    """One gateway process: its store and runner, with the kinds the tests use."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(url, name)
        self.ticks: list[int] = []
        self.stopped = asyncio.Event()
        self.kinds.register(JobKind("t.work", self.work, recover=self.recover))

    async def work(self, ctx: JobContext) -> str:
        """Checkpoints a tick every 50 ms, for ever (until cancelled)."""
        try:
            for i in range(10_000):
                await ctx.checkpoint(f"tick-{i}", {"by": self.name})
                self.ticks.append(i)
                await asyncio.sleep(0.05)
        finally:
            self.stopped.set()
        return "never"


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[Callable[[str], Awaitable[Replica]]]:
    async with started_replicas(lambda name: Replica(postgres_url, name)) as start:
        yield start


async def row(url: str, job_id: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        conn.row_factory = psycopg.rows.dict_row  # type: ignore[assignment]
        cur = await conn.execute("SELECT status, owner_id, lease_until, seq, checkpoints::text AS checkpoints, "
                                 "error::text AS error FROM jobs WHERE id=%s", (job_id,))
        found = await cur.fetchone()
        assert found is not None
        return dict(found)


# -- the store ------------------------------------------------------------------------------------------------------


async def test_a_write_naming_another_owner_changes_nothing(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    await store.open()
    try:
        job = job_of()
        await store.insert(job, params={}, owner_id="a", lease_until=time.time() + 60)
        await store.save_checkpoint(job.id, "first", 1, owner_id="a")
        before = await row(postgres_url, job.id)
        job.status = JobStatus.succeeded
        with pytest.raises(LeaseLost):
            await store.save(job, seq=5, owner_id="b")
        with pytest.raises(LeaseLost):
            await store.save_checkpoint(job.id, "second", 2, owner_id="b")
        assert await row(postgres_url, job.id) == before
        await store.save(job, seq=5, owner_id="a")
        assert (await row(postgres_url, job.id))["status"] == "succeeded"
    finally:
        await store.close()


async def test_claim_expired_takes_only_leases_that_ran_out_and_renewal_names_what_it_kept(
        postgres_url: str) -> None:
    a, b = PostgresJobStore(postgres_url), PostgresJobStore(postgres_url)
    await a.open()
    await b.open()
    try:
        live, dead = job_of(), job_of()
        await a.insert(live, params={}, owner_id="a", lease_until=time.time() + 60)
        await a.insert(dead, params={}, owner_id="a", lease_until=time.time() - 1)
        claimed = await b.claim_expired("b", time.time() + 60)
        assert [c.job.id for c in claimed] == [dead.id]
        assert await a.claim_expired("a", time.time() + 60) == []  # never one job to two claimers
        assert await a.renew_leases("a", time.time() + 60, [live.id, dead.id]) == [live.id]
        assert sorted(await b.renew_leases("b", time.time() + 60)) == [dead.id]
    finally:
        await a.close()
        await b.close()


async def test_the_embedded_store_claims_nothing_while_it_runs(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await store.open()
    try:
        assert store.shared is False
        job = job_of()
        await store.insert(job, params={}, owner_id="a", lease_until=time.time() - 1)
        assert await store.claim_expired("a", time.time() + 60) == []
        await store.save_checkpoint(job.id, "step", 1, owner_id="someone")  # one process: owners are not checked
        stored = await store.load(job.id)
        assert stored is not None and stored.checkpoints == {"step": 1}
    finally:
        await store.close()


# -- runners --------------------------------------------------------------------------------------------------------


async def test_a_running_replica_settles_the_jobs_of_a_dead_one(replicas: Any, postgres_url: str) -> None:
    b: Replica = await replicas("b")
    store = PostgresJobStore(postgres_url)
    await store.open()
    try:
        job = job_of()  # what a replica that died while running it left: its lease runs out in a moment
        await store.insert(job, params={}, owner_id="dead", lease_until=time.time() + 0.5)

        async def settled() -> bool:
            stored = await store.get(job.id)
            return stored is not None and stored.ended

        took = await until(settled, LEASE + 3, "the job settled by the running replica")
        assert took < 0.5 + b.runner.takeover_interval + 1
        stored = await store.load(job.id)
        assert stored is not None and stored.job.status is JobStatus.failed and stored.owner_id == "b"
        assert stored.job.error is not None and stored.job.error["detail"] == "settled by b"
    finally:
        await store.close()


async def test_a_replica_that_cannot_renew_stops_before_another_claims_its_job(
        replicas: Any, postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.jobs")
    a: Replica = await replicas("a")
    await replicas("b")  # takes the job over once its lease runs out
    job = await a.runner.submit("t.work")
    await until(lambda: asyncio.sleep(0, len(a.ticks) > 2), 5, "the job runs on a")

    async def unreachable(*args: Any, **kwargs: Any) -> list[str]:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(a.store, "renew_leases", unreachable)  # a network split, as far as a's leases go
    monkeypatch.setattr(a.store, "claim_expired", unreachable)
    cut = time.monotonic()
    await asyncio.wait_for(a.stopped.wait(), LEASE)  # a stops before its lease runs out
    stopped_after = time.monotonic() - cut
    ticks_at_stop = len(a.ticks)
    assert job.id not in {j for j in a.runner._active}
    at_stop = await row(postgres_url, job.id)
    assert at_stop["owner_id"] == "a" and at_stop["status"] == "running"  # not claimed yet

    async def settled() -> bool:
        return (await row(postgres_url, job.id))["status"] == "failed"

    await until(settled, LEASE + 3, "the job settled by b")
    settled_row = await row(postgres_url, job.id)
    assert settled_row["owner_id"] == "b" and "settled by b" in settled_row["error"]
    assert f'"tick-{ticks_at_stop + 1}"' not in settled_row["checkpoints"]  # a wrote nothing after it stopped
    await asyncio.sleep(LEASE)
    assert await row(postgres_url, job.id) == settled_row
    assert len(a.ticks) == ticks_at_stop
    assert stopped_after < LEASE - a.runner.fence_margin + 0.5
    assert any(f"job {job.id} (t.work) abandoned" in r.getMessage() for r in caplog.records)


async def test_a_write_finding_the_job_owned_by_another_abandons_it(replicas: Any, postgres_url: str) -> None:
    a: Replica = await replicas("a")
    job = await a.runner.submit("t.work")
    await until(lambda: asyncio.sleep(0, len(a.ticks) > 2), 5, "the job runs on a")
    sub = a.runner.bus.subscribe(job.id)
    assert sub is not None
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("UPDATE jobs SET owner_id='b', lease_until=%s WHERE id=%s", (time.time() + 60, job.id))
    await asyncio.wait_for(a.stopped.wait(), 2)  # its next checkpoint found the job b's
    taken = await row(postgres_url, job.id)
    await asyncio.sleep(0.5)
    assert await row(postgres_url, job.id) == taken
    assert taken["status"] == "running" and taken["owner_id"] == "b"
    seen = await a.runner.wait(job.id, 0.1)
    assert seen is not None and seen.status is JobStatus.running  # read from the store: b's to settle
    await asyncio.sleep(0.3)  # a's watchers stay, following the job from the database, with no `end` from a
    assert not sub[0].closed and a.runner.bus.followed_seq(job.id) is not None
    assert all(e.type != "end" for e in list(sub[0]._queue))


async def test_the_embedded_store_keeps_its_jobs_when_renewing_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store: JobStore = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await store.open()
    kinds = JobKinds()
    gate = asyncio.Event()

    async def step(ctx: JobContext) -> str:
        await gate.wait()
        await ctx.checkpoint("after", None)
        return "done"

    kinds.register(JobKind("t.wait", step))
    runner = JobRunner(store, JobBus(), kinds=kinds, lease_seconds=1.5)
    await runner.start()
    try:
        assert runner.shared is False

        async def failing(*args: Any, **kwargs: Any) -> list[str]:
            raise StoreUnavailable("no")

        monkeypatch.setattr(store, "renew_leases", failing)
        job = await runner.submit("t.wait")
        await asyncio.sleep(2.5)
        gate.set()
        ended = await runner.wait(job.id, 5)
        assert ended is not None and ended.status is JobStatus.succeeded and ended.result == "done"
    finally:
        await runner.shutdown(0)
        await store.close()


async def test_a_cancel_asked_of_another_replica_reaches_the_owner(replicas: Any, postgres_url: str) -> None:
    a: Replica = await replicas("a")
    b: Replica = await replicas("b")
    job = await a.runner.submit("t.work")
    await until(lambda: asyncio.sleep(0, len(a.ticks) > 2), 5, "the job runs on a")
    asked = time.monotonic()
    seen = await b.runner.cancel(job.id)
    assert seen.id == job.id and not seen.ended  # b answers as the owner would: the job, while it stops
    ended = await b.runner.wait(job.id, 5)  # b reads the store until the owner has stored the end
    took = time.monotonic() - asked
    assert ended is not None and ended.status is JobStatus.cancelled, ended
    assert took < 2, took
    assert a.stopped.is_set()
    with pytest.raises(Exception, match="already ended"):
        await b.runner.cancel(job.id)


async def test_a_lost_cancel_notification_is_made_up_for_at_the_next_renewal(
        replicas: Any, postgres_url: str) -> None:
    a: Replica = await replicas("a")
    job = await a.runner.submit("t.work")
    await until(lambda: asyncio.sleep(0, len(a.ticks) > 2), 5, "the job runs on a")
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("UPDATE jobs SET cancel_requested=true WHERE id=%s", (job.id,))  # and no notification
    ended = await a.runner.wait(job.id, a.runner.takeover_interval + 3)
    assert ended is not None and ended.status is JobStatus.cancelled, ended


async def test_a_replica_frozen_past_its_fence_writes_nothing_when_it_resumes(
        replicas: Any, postgres_url: str) -> None:
    a: Replica = await replicas("a")
    job = await a.runner.submit("t.work")
    await until(lambda: asyncio.sleep(0, len(a.ticks) > 2), 5, "the job runs on a")
    before = len(a.ticks)
    time.sleep(LEASE - a.runner.fence_margin + 0.3)  # the whole process stands still (as under SIGSTOP)
    await asyncio.wait_for(a.stopped.wait(), 1)
    assert len(a.ticks) <= before + 1  # at most the checkpoint written before the pause
    await asyncio.sleep(0.5)
    stored = await row(postgres_url, job.id)
    assert f'"tick-{before + 1}"' not in stored["checkpoints"] and stored["status"] == "running"
    assert job.id not in a.runner._active


# -- pending cleanups -----------------------------------------------------------------------------------------------


async def test_pending_cleanups_are_retried_only_by_their_owner_or_for_a_dead_one(postgres_url: str) -> None:
    """A replica retries the pending cleanups of its own jobs and of a replica whose heartbeat ran out (they become
    its own), never those of another live replica."""
    from app.jobs.models import JobCleanup

    attempts: list[tuple[str, str]] = []

    def replica(name: str) -> Replica:
        r = Replica(postgres_url, name)

        async def rollback(ctx: JobContext) -> None:
            attempts.append((name, ctx.job_id))
            raise RuntimeError("LXD does not answer")

        r.kinds.register(JobKind("t.undo", r.work, rollback=rollback))
        return r

    seed = PostgresJobStore(postgres_url)
    await seed.open()
    jobs: dict[str, str] = {}
    try:
        for owner in ("a", "ghost"):
            job = job_of(JobStatus.failed, kind="t.undo")
            job.finished_at = utcnow()
            await seed.insert(job, params={}, owner_id=owner, lease_until=time.time() - 1)
            job.cleanup = JobCleanup(status="pending", detail="left to undo", attempts=1, updated_at=utcnow())
            await seed.save(job, seq=1)
            jobs[owner] = job.id
    finally:
        await seed.close()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO replicas (owner_id, alive_until) VALUES ('a', %s), ('ghost', %s)",
                           (time.time() + 600, time.time() - 1))
    b = await replica("b").open()
    try:
        await until(lambda: _true(("b", jobs["ghost"]) in attempts), 5, "b retries the dead replica's cleanup")
        await asyncio.sleep(1.5)  # the first retry is at once: the live replica's would have happened by now
        assert ("b", jobs["a"]) not in attempts, "b retried the cleanup of a live replica's job"
        assert (await row(postgres_url, jobs["ghost"]))["owner_id"] == "b"
        assert (await row(postgres_url, jobs["a"]))["owner_id"] == "a"
        a = await replica("a").open()
        try:
            await until(lambda: _true(("a", jobs["a"]) in attempts), 5, "a retries its own cleanup")
            assert ("a", jobs["ghost"]) not in attempts
        finally:
            await a.close()
    finally:
        await b.close()


async def _true(value: bool) -> bool:
    return value

"""What only the shared store has: replicas on one PostgreSQL database claiming jobs, migrating, and outliving the
database server's restart (the private server of tests/support/postgres.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from app.jobs.bus import JobBus
from app.jobs.idempotency import Idempotency, Replay, Reservation
from app.jobs.kinds import JobKind, JobKinds
from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.jobs.runner import JobContext, JobRunner
from app.jobs.store import JobFilter
from app.store.errors import StoreUnavailable
from app.store.pg_schema import MIGRATIONS, SCHEMA_VERSION
from app.store.postgres import PostgresJobStore
from tests.support.postgres import PostgresServer


def make_job(status: JobStatus = JobStatus.running) -> Job:
    return Job(id=new_job_id(), kind="test.kind", status=status, created_at=utcnow())


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[list[PostgresJobStore]]:
    """Three stores on one database, as three gateway processes would have them."""
    stores = [PostgresJobStore(postgres_url) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


async def versions(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT version FROM schema_version ORDER BY version")
        return [r[0] for r in await cur.fetchall()]


async def test_migrations_are_applied_once_when_replicas_open_together(postgres_url: str) -> None:
    stores = [PostgresJobStore(postgres_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert await versions(postgres_url) == list(range(1, SCHEMA_VERSION + 1)) == sorted(MIGRATIONS)
        job = make_job(JobStatus.queued)
        await stores[0].insert(job, params={}, owner_id="a", lease_until=0)
        assert (await stores[3].get(job.id)) is not None
    finally:
        for s in stores:
            await s.close()


async def test_a_schema_newer_than_the_gateway_is_refused(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    await store.open()
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match=r"newer than this gateway's .*upgrade the gateway"):
        await store.open()


async def test_every_replica_is_welcome_and_sees_the_others_writes(replicas: list[PostgresJobStore]) -> None:
    a, b, c = replicas
    job = make_job(JobStatus.queued)
    await a.insert(job, params={"n": 1}, owner_id="a", lease_until=time.time() + 60)
    job.status, job.started_at = JobStatus.running, utcnow()
    await b.save(job, seq=2)
    await c.save_checkpoint(job.id, "created", {"name": "c1"})
    stored = await a.load(job.id)
    assert stored is not None and stored.job.status is JobStatus.running
    assert stored.checkpoints == {"created": {"name": "c1"}} and stored.seq == 2 and stored.params == {"n": 1}
    await c.audit_append({"time": "2026-11-01T12:00:00.123Z", "method": "POST", "path": "/v1/containers",
                          "status": 202, "outcome": "accepted", "token": "ci"})
    assert [r["time"] for r in await b.audit_list(limit=5)] == ["2026-11-01T12:00:00.123Z"]


async def test_replicas_claiming_at_once_never_get_the_same_job(replicas: list[PostgresJobStore]) -> None:
    jobs = [make_job(JobStatus.running if i % 2 else JobStatus.queued) for i in range(120)]
    for job in jobs:
        await replicas[0].insert(job, params={}, owner_id="dead", lease_until=time.time() - 1)
    lease = time.time() + 60
    rounds = await asyncio.gather(*(s.claim_unfinished(f"replica-{i % 3}", lease)
                                    for i, s in enumerate(replicas * 4)))
    claimed: dict[str, str] = {}
    for i, got in enumerate(rounds):
        for stored in got:
            owner = f"replica-{i % 3}"
            assert claimed.setdefault(stored.job.id, owner) == owner, "a job was given to two replicas"
            assert stored.owner_id == owner and stored.lease_until == lease
    assert set(claimed) == {j.id for j in jobs}
    # a claimed job is held: nobody else takes it while its lease runs
    assert await replicas[1].claim_unfinished("late", time.time() + 60) == []


async def test_a_live_lease_is_left_alone_until_it_runs_out(replicas: list[PostgresJobStore]) -> None:
    a, b, _ = replicas
    job = make_job()
    await a.insert(job, params={}, owner_id="a", lease_until=time.time() + 0.5)
    assert await b.claim_unfinished("b", time.time() + 60) == []
    await a.renew_leases("a", time.time() + 0.5)
    assert await b.claim_unfinished("b", time.time() + 60) == []
    await asyncio.sleep(0.6)  # "a" stopped renewing (it died)
    claimed = await b.claim_unfinished("b", time.time() + 60)
    assert [c.job.id for c in claimed] == [job.id]
    await a.renew_leases("a", time.time() + 60)  # too late: the job is b's now
    stored = await a.load(job.id)
    assert stored is not None and stored.owner_id == "b"


async def test_leases_given_up_at_shutdown_are_claimed_at_once(replicas: list[PostgresJobStore]) -> None:
    a, b, _ = replicas
    job = make_job(JobStatus.queued)
    await a.insert(job, params={}, owner_id="a", lease_until=time.time() + 60)
    await a.renew_leases("a", time.time())  # what a runner does when it shuts down
    assert [c.job.id for c in await b.claim_unfinished("b", time.time() + 60)] == [job.id]


async def test_a_live_replicas_idempotency_reservation_is_not_taken_over(replicas: list[PostgresJobStore]) -> None:
    a, b, _ = replicas
    await a.claim_unfinished("a", time.time() + 60)  # replica "a" started: its heartbeat runs
    now = time.time()
    rec, created = await a.idempotency_reserve("tok", "k", "fp", owner_id="a", now=now, ttl=60)
    assert created
    rec, created = await b.idempotency_reserve("tok", "k", "fp", owner_id="b", now=now, ttl=60)
    assert not created and rec.owner_id == "a" and rec.job_id is None  # a's job is on the way
    await a.renew_leases("a", time.time())  # "a" stops
    rec, created = await b.idempotency_reserve("tok", "k", "fp", owner_id="b", now=time.time() + 0.01, ttl=60)
    assert created and rec.owner_id == "b"


async def test_a_replay_on_another_replica_waits_for_the_first_request(replicas: list[PostgresJobStore]) -> None:
    a, b, _ = replicas
    await a.claim_unfinished("a", time.time() + 60)
    first = await Idempotency(a, owner_id="a").begin("tok", "key", "fp")
    assert isinstance(first, Reservation)
    replay = asyncio.create_task(Idempotency(b, owner_id="b").begin("tok", "key", "fp"))
    await asyncio.sleep(0.3)
    assert not replay.done()  # neither a second reservation nor a release of a's
    await Idempotency(a, owner_id="a").complete(first, "job-1")
    assert await asyncio.wait_for(replay, 5) == Replay("job-1")


async def test_a_stopped_server_fails_calls_fast_and_the_store_comes_back_by_itself(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    await store.open()
    try:
        job = make_job(JobStatus.queued)
        await store.insert(job, params={}, owner_id="me", lease_until=0)
        postgres_server.stop("immediate")
        try:
            # the first call notices within a second (it finds no connection at once, and cannot make one); the next
            # ones fail at once
            for limit, call in ((2.5, lambda: store.get(job.id)), (0.5, lambda: store.list(JobFilter(), limit=5)),
                                (0.5, lambda: store.save(job, seq=1))):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="the job database is unreachable"):
                    await call()
                assert time.monotonic() - started < limit
            assert "unreachable" in (await store.check_writable() or "")
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 5  # back within a probe interval or two
        while (error := await store.check_writable()) is not None:
            assert time.monotonic() < deadline, error
            await asyncio.sleep(0.1)
        assert (await store.get(job.id)) is not None  # the same store, never reopened
    finally:
        await store.close()


async def test_opening_an_unreachable_database_names_why(tmp_path: object) -> None:
    store = PostgresJobStore("postgresql://gw:s3cret-pass@/jobs?host=/nonexistent/socket/dir")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert time.monotonic() - started < 5
    assert "unreachable" in str(caught.value) and "s3cret-pass" not in str(caught.value)


async def test_a_job_ending_while_the_server_is_down_is_stored_once_it_is_back(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url)
    await store.open()
    runner = JobRunner(store, JobBus(), kinds=JobKinds(), lease_seconds=30)
    gate = asyncio.Event()

    async def step(ctx: JobContext) -> str:
        await gate.wait()
        return "done"

    runner.kinds.register(JobKind("t.wait", step))
    await runner.start()
    try:
        job = await runner.submit("t.wait")
        deadline = time.monotonic() + 5
        while (stored := await store.get(job.id)) is None or stored.status is not JobStatus.running:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        postgres_server.stop("immediate")
        try:
            gate.set()  # the step returns: the job's end cannot be stored yet, and is retried
            waiting = await runner.wait(job.id, 1)
            assert waiting is not None and waiting.status is JobStatus.running  # it ends once stored
        finally:
            postgres_server.start()
        ended = await runner.wait(job.id, 15)
        assert ended is not None and ended.status is JobStatus.succeeded and ended.result == "done"
        stored = await store.get(job.id)
        assert stored is not None and stored.status is JobStatus.succeeded and stored.result == "done"
    finally:
        await runner.shutdown(0)
        await store.close()


async def test_a_busy_pool_makes_calls_wait_rather_than_fail(postgres_url: str) -> None:
    store = PostgresJobStore(postgres_url, pool_size=1, timeout=5)
    await store.open()
    try:
        async def hold() -> None:
            async with store.connection() as conn:
                await conn.execute("SELECT pg_sleep(1.2)")

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await store.list(JobFilter(), limit=1) == []  # waited for the one connection, past the quick wait
        assert 0.9 < time.monotonic() - started < 4
        await holder
    finally:
        await store.close()


async def test_a_busy_pool_is_not_a_lost_server(postgres_url: str) -> None:
    """Every pooled connection in use: a call waits its timeout and fails naming that, but the store is not marked
    down (no call is refused at once afterwards, the pool is not replaced), and the next call works."""
    store = PostgresJobStore(postgres_url, pool_size=1, timeout=1.0)
    await store.open()
    try:
        pool = store._pool
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with store.connection():
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="busy"):
            await store.check()
        assert 0.9 < time.monotonic() - start < 5
        release.set()
        await holder
        await store.check()  # at once: not refused as if the server were gone
        assert store._pool is pool and store._down is None
    finally:
        await store.close()

"""What replicas on one PostgreSQL database reserve in it before a job exists: a name being created (one replica
gets it; it holds while its job is unfinished, and lapses when its replica dies), and places under a token's cap of
unfinished jobs (counted atomically: replicas asking at once never exceed it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.store.postgres import PostgresJobStore

KEY = ("container", "local", "default", "web1")
TTL = 120.0


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[list[PostgresJobStore]]:
    """Two stores on one database, as two gateway processes have them, both alive (their heartbeats fresh)."""
    stores = [PostgresJobStore(postgres_url) for _ in range(2)]
    for s in stores:
        await s.open()
    await heartbeat(postgres_url, "a", time.time() + 600)
    await heartbeat(postgres_url, "b", time.time() + 600)
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


async def heartbeat(url: str, owner: str, alive_until: float) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("INSERT INTO replicas (owner_id, alive_until) VALUES (%s, %s) ON CONFLICT (owner_id) "
                           "DO UPDATE SET alive_until=excluded.alive_until", (owner, alive_until))


async def new_job(store: PostgresJobStore, owner: str, token: str = "t1") -> Job:
    job = Job(id=new_job_id(), kind="t.work", status=JobStatus.queued, created_at=utcnow(), token_id=token)
    await store.insert(job, params={}, owner_id=owner, lease_until=time.time() + 60)
    return job


async def test_two_replicas_reserving_one_name_at_once_get_it_once(replicas: list[PostgresJobStore]) -> None:
    a, b = replicas
    for attempt in range(20):
        key = (*KEY[:3], f"web{attempt}")
        got = await asyncio.gather(a.reserve_name(key, owner_id="a", now=time.time(), ttl=TTL),
                                   b.reserve_name(key, owner_id="b", now=time.time(), ttl=TTL))
        assert sorted(got, key=str) == sorted([None, ""], key=str), got


async def test_a_reserved_name_holds_while_its_job_is_unfinished(replicas: list[PostgresJobStore]) -> None:
    a, b = replicas
    assert await a.reserve_name(KEY, owner_id="a", now=time.time(), ttl=TTL) is None
    job = await new_job(a, "a")
    await a.bind_name(KEY, job.id, owner_id="a")
    assert await b.reserve_name(KEY, owner_id="b", now=time.time() + 2 * TTL, ttl=TTL) == job.id  # past expiry
    job.status, job.finished_at = JobStatus.succeeded, utcnow()
    await a.save(job, seq=1)
    assert await b.reserve_name(KEY, owner_id="b", now=time.time(), ttl=TTL) is None  # freed when it ended
    assert await a.reserve_name(KEY, owner_id="a", now=time.time(), ttl=TTL) == ""


async def test_a_released_or_lapsed_reservation_is_free(replicas: list[PostgresJobStore], postgres_url: str) -> None:
    a, b = replicas
    assert await a.reserve_name(KEY, owner_id="a", now=time.time(), ttl=TTL) is None
    await a.release_name(KEY, owner_id="a")
    assert await b.reserve_name(KEY, owner_id="b", now=time.time(), ttl=TTL) is None
    await heartbeat(postgres_url, "b", time.time() - 1)  # b died before its job existed
    assert await a.reserve_name(KEY, owner_id="a", now=time.time(), ttl=TTL) is None
    assert await b.reserve_name(KEY, owner_id="b", now=time.time() + TTL + 1, ttl=TTL) is None  # a's expired


async def test_the_job_cap_holds_across_replicas_asking_at_once(replicas: list[PostgresJobStore]) -> None:
    a, b = replicas
    await new_job(a, "a")
    await new_job(b, "b", token="another")

    async def ask(store: PostgresJobStore, owner: str) -> bool:
        return await store.reserve_job_slot("t1", 5, slot_id=uuid.uuid4().hex, owner_id=owner, now=time.time(),
                                            ttl=TTL)

    got = await asyncio.gather(*(ask(s, o) for _ in range(15) for s, o in ((a, "a"), (b, "b"))))
    assert sum(got) == 4  # one unfinished job of t1 already
    assert await b.reserve_job_slot("another", 5, slot_id="x", owner_id="b", now=time.time(), ttl=TTL)


async def test_places_of_a_dead_replica_or_given_back_are_free_again(replicas: list[PostgresJobStore],
                                                                     postgres_url: str) -> None:
    a, b = replicas
    assert await a.reserve_job_slot("t1", 2, slot_id="s1", owner_id="a", now=time.time(), ttl=TTL)
    assert await b.reserve_job_slot("t1", 2, slot_id="s2", owner_id="b", now=time.time(), ttl=TTL)
    assert not await a.reserve_job_slot("t1", 2, slot_id="s3", owner_id="a", now=time.time(), ttl=TTL)
    await a.release_job_slot("s1")
    assert await a.reserve_job_slot("t1", 2, slot_id="s4", owner_id="a", now=time.time(), ttl=TTL)
    await heartbeat(postgres_url, "b", time.time() - 1)
    assert await a.reserve_job_slot("t1", 2, slot_id="s5", owner_id="a", now=time.time(), ttl=TTL)
    assert not await a.reserve_job_slot("t1", 2, slot_id="s6", owner_id="a", now=time.time(), ttl=TTL)
    assert await a.reserve_job_slot("t1", 2, slot_id="s7", owner_id="a", now=time.time() + TTL + 1, ttl=TTL)

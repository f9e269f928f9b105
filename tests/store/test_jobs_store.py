"""The job stores: schema, listing order and filters, checkpoints, claiming, pruning, the process lock.

Tests taking `store` run on each kind of store (SQLite and PostgreSQL, tests/support/job_store.py); those taking
`sqlite_store` are about the embedded store alone (its file, its lock, its migrations)."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiosqlite
import pytest

from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.jobs.store import JobFilter, JobStore, StoreLocked
from app.store.jobs import MIGRATIONS, SCHEMA_VERSION, SQLiteJobStore


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def count_rows(store: JobStore, table: str) -> int:
    if isinstance(store, SQLiteJobStore):
        async with aiosqlite.connect(store.path) as db:
            return (await (await db.execute(f"SELECT count(*) FROM {table}")).fetchone())[0]  # type: ignore[index]
    async with store.connection() as conn:  # type: ignore[attr-defined]
        return (await (await conn.execute(f"SELECT count(*) AS n FROM {table}")).fetchone())["n"]  # type: ignore[no-any-return]


def make_job(kind: str = "test.kind", status: JobStatus = JobStatus.queued, **kw: object) -> Job:
    return Job(id=new_job_id(), kind=kind, status=status, created_at=utcnow(), **kw)  # type: ignore[arg-type]


async def test_schema_is_versioned_and_wal(sqlite_store: SQLiteJobStore) -> None:
    async with aiosqlite.connect(sqlite_store.path) as db:
        assert (await (await db.execute("PRAGMA user_version")).fetchone())[0] == SCHEMA_VERSION  # type: ignore[index]
        assert (await (await db.execute("PRAGMA journal_mode")).fetchone())[0] == "wal"  # type: ignore[index]


async def test_second_process_is_refused(sqlite_store: SQLiteJobStore) -> None:
    other = SQLiteJobStore(sqlite_store.path)
    with pytest.raises(StoreLocked, match="another gateway process"):
        await other.open()


async def test_round_trip_and_times_are_utc_rfc3339(store: JobStore) -> None:
    job = make_job(remote="local", project="default", resource="/v1/containers/c1", requested_by="ci")
    await store.insert(job, params={"a": 1}, owner_id="me", lease_until=time.time() + 30)
    job.status = JobStatus.failed
    job.error = {"type": "x", "lxd_error": "boom"}
    job.finished_at = utcnow()
    await store.save(job, seq=7)
    await store.save_checkpoint(job.id, "created", {"name": "c1"})
    stored = await store.load(job.id)
    assert stored is not None
    assert stored.job.model_dump() == job.model_dump()
    assert stored.params == {"a": 1} and stored.checkpoints == {"created": {"name": "c1"}} and stored.seq == 7
    body = stored.job.model_dump(mode="json")
    assert body["created_at"].endswith("Z") and "T" in body["created_at"]


async def test_list_newest_first_with_filters_and_pages(store: JobStore) -> None:
    ids = []
    for i in range(5):
        job = make_job(kind="a" if i % 2 == 0 else "b", remote="local")
        await store.insert(job, params={}, owner_id="me", lease_until=0)
        ids.append(job.id)
    rows = await store.list(JobFilter(), limit=10)
    assert [r.job.id for r in rows] == ids[::-1]
    rows = await store.list(JobFilter(kind="a"), limit=2)
    assert [r.job.id for r in rows] == [ids[4], ids[2]]
    rows = await store.list(JobFilter(kind="a"), limit=2, before=rows[-1].position)
    assert [r.job.id for r in rows] == [ids[0]]
    assert await store.list(JobFilter(status=("running",)), limit=10) == []


async def test_claim_unfinished_and_prune(store: JobStore) -> None:
    running = make_job(status=JobStatus.running)
    done = make_job(status=JobStatus.succeeded)
    await store.insert(running, params={}, owner_id="dead", lease_until=time.time() - 1)
    await store.insert(done, params={}, owner_id="dead", lease_until=0)
    done.finished_at = utcnow() - timedelta(days=8)
    await store.save(done, seq=1)
    claimed = await store.claim_unfinished("me", time.time() + 30)
    assert [c.job.id for c in claimed] == [running.id] and claimed[0].owner_id == "me"
    assert await store.prune(utcnow() - timedelta(days=7)) == 1
    assert await store.get(done.id) is None and await store.get(running.id) is not None


async def test_the_embedded_store_claims_every_unfinished_job_whatever_its_lease(sqlite_store: SQLiteJobStore) -> None:
    # the lock file guarantees that no other live process uses the database: the previous owner is dead
    running = make_job(status=JobStatus.running)
    await sqlite_store.insert(running, params={}, owner_id="dead", lease_until=time.time() + 999)
    claimed = await sqlite_store.claim_unfinished("me", time.time() + 30)
    assert [c.job.id for c in claimed] == [running.id] and claimed[0].owner_id == "me"


async def test_reopening_migrates_nothing(store: JobStore) -> None:
    await store.close()
    await store.open()  # re-open: nothing to migrate, no error
    assert await store.list(JobFilter(), limit=1) == []


async def test_migrates_an_empty_database_once(tmp_path: Path) -> None:
    s = SQLiteJobStore(tmp_path / "j.sqlite3")
    await s.open()
    await s.close()
    await s.open()  # re-open: nothing to migrate, no error
    await s.close()


async def test_idempotency_records(store: JobStore) -> None:
    now = time.time()
    rec, created = await store.idempotency_reserve("tok", "k", "fp", owner_id="me", now=now, ttl=10)
    assert created and rec.job_id is None
    rec, created = await store.idempotency_reserve("tok", "k", "fp2", owner_id="me", now=now, ttl=10)
    assert not created and rec.fingerprint == "fp"
    await store.idempotency_complete("tok", "k", "job1")
    rec, created = await store.idempotency_reserve("other", "k", "fp2", owner_id="me", now=now, ttl=10)
    assert created  # scoped per token
    rec, created = await store.idempotency_reserve("tok", "k", "fp2", owner_id="me", now=now + 11, ttl=10)
    assert created  # expired records are replaced
    assert await store.idempotency_prune(now + 100) == 2


async def test_output_is_stored_apart_and_a_listing_never_loads_it(store: JobStore) -> None:
    job = make_job(kind="container.exec", remote="local", project="default", token_id="tok-1")
    await store.insert(job, params={"command": ["yes"]}, owner_id="me", lease_until=0)
    big = "x" * (16 << 20)
    job.status, job.finished_at = JobStatus.succeeded, utcnow()
    job.result = {"exit_code": 0, "stdout": big, "stderr": "e", "truncated": True}
    await store.save(job, seq=3)
    stored = await store.load(job.id)
    assert stored is not None and stored.job.result == job.result and stored.job.token_id == "tok-1"
    tracemalloc.start()
    try:
        rows = await store.list(JobFilter(), limit=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # the 16 MiB output was never read into memory
    assert [(r.job.result, r.has_output, r.job.token_id) for r in rows] == [
        ({"exit_code": 0, "truncated": True}, True, "tok-1")]
    assert await store.prune(utcnow() + timedelta(days=1)) == 1
    assert await count_rows(store, "job_outputs") == 0


async def test_listing_keeps_only_jobs_within_the_given_remotes_and_projects(store: JobStore) -> None:
    jobs = [make_job(remote=r, project=p) for r, p in
            [("local", "default"), ("local", "p2"), ("tls", "p2"), (None, "p2"), ("local", None)]]
    for j in jobs:
        await store.insert(j, params={}, owner_id="me", lease_until=0)

    async def ids(**kw: tuple[str, ...] | None) -> set[str]:
        return {r.job.id for r in await store.list(JobFilter(), limit=10, **kw)}

    assert await ids() == {j.id for j in jobs}
    assert await ids(projects=("p2",)) == {jobs[1].id, jobs[2].id, jobs[3].id}
    assert await ids(remotes=("local",), projects=("p2",)) == {jobs[1].id}
    assert await ids(remotes=("local",)) == {jobs[0].id, jobs[1].id, jobs[4].id}  # no remote: only for unlimited
    assert await ids(projects=()) == set()


async def test_a_version_2_database_is_migrated_with_its_outputs_moved_apart(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        for version in (1, 2):
            db.executescript(MIGRATIONS[version])
        db.execute("PRAGMA user_version=2")
        for job_id, result in (("exec1", {"exit_code": 0, "stdout": "out", "stderr": "err", "truncated": False}),
                               ("list1", ["a", "b"]), ("none1", None)):
            db.execute("INSERT INTO jobs (id, kind, status, remote, project, created_at, result) "
                       "VALUES (?, 'k', 'succeeded', 'local', 'default', '2026-01-01T00:00:00.000Z', ?)",
                       (job_id, json.dumps(result) if result is not None else None))
    store = SQLiteJobStore(path)
    await store.open()
    try:
        rows = {r.job.id: r for r in await store.list(JobFilter(), limit=10)}
        assert rows["exec1"].job.result == {"exit_code": 0, "truncated": False} and rows["exec1"].has_output
        assert rows["list1"].job.result == ["a", "b"] and not rows["list1"].has_output
        assert rows["none1"].job.result is None and not rows["none1"].has_output
        exec1 = await store.get("exec1")
        assert exec1 is not None and exec1.token_id is None  # started before jobs were bound to tokens
        assert exec1.result == {"exit_code": 0, "stdout": "out", "stderr": "err", "truncated": False}
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_version_2_database_gains_cleanups_and_keeps_its_jobs(tmp_path: Path) -> None:
    from app.jobs.models import JobCleanup
    from app.store.jobs import MIGRATIONS

    path = tmp_path / "jobs.sqlite3"
    async with aiosqlite.connect(path) as db:  # as a gateway of schema version 2 left it
        for version in (1, 2):
            await db.executescript(MIGRATIONS[version])
        await db.execute("PRAGMA user_version=2")
        await db.execute("INSERT INTO jobs (id, kind, status, created_at) VALUES ('old', 'k', 'failed', "
                         "'2026-11-01T12:00:00.000Z')")
        await db.commit()
    store = SQLiteJobStore(path)
    await store.open()
    try:
        old = await store.load("old")
        assert old is not None and old.job.cleanup is None
        assert await store.pending_cleanups() == []
        old.job.cleanup = JobCleanup(status="pending", detail="container 'c1' could not be removed yet",
                                     updated_at=utcnow())
        await store.save(old.job, seq=1)
        pending = await store.pending_cleanups()
        assert [s.job.id for s in pending] == ["old"]
        assert pending[0].job.model_dump(mode="json")["cleanup"] == old.job.model_dump(mode="json")["cleanup"]
        old.job.cleanup = JobCleanup(status="done", detail="container 'c1' was removed", attempts=2,
                                     updated_at=utcnow())
        await store.save(old.job, seq=2)
        assert await store.pending_cleanups() == []
    finally:
        await store.close()


# -- durability and checkpoints -------------------------------------------------------------------------------------


async def test_the_writer_commits_to_the_wal_without_fsync_and_never_checkpoints(sqlite_store: SQLiteJobStore) -> None:
    store = sqlite_store
    def settings(conn: sqlite3.Connection) -> tuple[str, int, int]:
        return (conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert await store._w.call(settings) == ("wal", 1, 0)  # synchronous=NORMAL; checkpoints are the checkpointer's


async def _fill_wal(store: SQLiteJobStore) -> None:
    big = {"blob": "x" * 8000}
    for _ in range(600):  # about 5 MB of WAL, past SQLite's own automatic checkpoint (1,000 pages)
        await store.insert(make_job(), params=big, owner_id="me", lease_until=time.time() + 30)


async def test_no_commit_copies_the_wal_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore(path, checkpoint_interval=3600)
    await store.open()
    try:
        before = path.stat().st_size
        await _fill_wal(store)
        assert path.stat().st_size == before, "a commit checkpointed the WAL"
        assert Path(f"{path}-wal").stat().st_size > 4_000_000
        busy, frames, copied = await store.checkpoint()
        assert busy == 0 and frames > 1000 and copied == frames
        assert path.stat().st_size > 4_000_000
    finally:
        await store.close()


async def test_the_background_checkpointer_copies_the_wal_soon_after_writes(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "jobs.sqlite3"
    store = SQLiteJobStore(path, checkpoint_interval=0.05)
    await store.open()
    try:
        await _fill_wal(store)
        async with asyncio.timeout(10):
            while path.stat().st_size < 4_000_000:
                await asyncio.sleep(0.05)
    finally:
        await store.close()
    assert not Path(f"{path}-wal").exists(), "closing the store checkpoints the WAL in full and removes it"


CRASHING_WRITER = """
import asyncio, os, signal, sys, time
from pathlib import Path
from app.jobs.models import Job, JobStatus, new_job_id, utcnow
from app.store.jobs import SQLiteJobStore

async def main(path):
    store = SQLiteJobStore(path)
    await store.open()
    job = Job(id=new_job_id(), kind="t.crash", status=JobStatus.queued, created_at=utcnow())
    await store.insert(job, params={}, owner_id="dead", lease_until=time.time() + 30)
    job.status, job.finished_at, job.result = JobStatus.succeeded, utcnow(), {"ok": True}
    await store.save(job, seq=3)
    print(job.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: the commits are only in the WAL

asyncio.run(main(Path(sys.argv[1])))
"""


async def test_a_commit_survives_the_process_being_killed(tmp_path: Path) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    path = tmp_path / "jobs.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WRITER, str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == -9, err.decode()
    job_id = out.decode().strip()
    store = SQLiteJobStore(path)
    await store.open()  # the lock died with the process
    try:
        stored = await store.load(job_id)
    finally:
        await store.close()
    assert stored is not None and stored.job.status is JobStatus.succeeded and stored.job.result == {"ok": True}
    assert stored.seq == 3


async def test_small_writes_run_on_the_loop_while_the_writer_is_idle_and_queue_behind_it_otherwise(
        sqlite_store: SQLiteJobStore) -> None:
    """A job's small writes skip the hop to the writer's thread when nothing waits there (milliseconds off every
    job step); a large one, or any write while the thread is busy, goes to the thread, in the order made."""
    import threading

    from app.store import jobs as store_module

    ran_on: list[tuple[str, str]] = []
    real = store_module._transaction

    def transaction(conn: sqlite3.Connection, statements: list[tuple[str, tuple[object, ...]]]) -> list[int]:
        ran_on.append((statements[0][1][1] if len(statements[0][1]) > 1 else "", threading.current_thread().name))
        return real(conn, statements)

    store_module._transaction = transaction  # type: ignore[assignment]
    try:
        job = make_job()
        await sqlite_store.insert(job, params={}, owner_id="o", lease_until=0)
        job.status = JobStatus.running
        await sqlite_store.save(job, seq=1)
        assert ran_on[-1][1] == threading.current_thread().name  # idle writer, small write: inline

        big = make_job(result={"output": "x" * (store_module.INLINE_MAX_BYTES + 1)})
        await sqlite_store.insert(big, params={}, owner_id="o", lease_until=0)
        assert ran_on[-1][1].startswith("jobs-db-writer")

        writer = sqlite_store._w
        gate = threading.Event()
        busy = asyncio.ensure_future(writer.call(lambda conn: gate.wait(5)))  # the thread is held up
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(sqlite_store.save(job, seq=2))  # small, but the thread has work: queued
        await asyncio.sleep(0.05)
        assert not queued.done()
        gate.set()
        await busy
        await queued
        assert ran_on[-1][1].startswith("jobs-db-writer")
        stored = await sqlite_store.load(job.id)
        assert stored is not None and stored.seq == 2 and stored.job.status is JobStatus.running
    finally:
        store_module._transaction = real  # type: ignore[assignment]


async def test_a_write_cancelled_while_queued_does_not_keep_later_ones_off_the_loop(
        sqlite_store: SQLiteJobStore) -> None:
    import threading

    writer = sqlite_store._w
    gate = threading.Event()
    busy = asyncio.ensure_future(writer.call(lambda conn: gate.wait(5)))
    await asyncio.sleep(0.05)
    dropped = asyncio.ensure_future(writer.call(lambda conn: threading.current_thread().name))
    await asyncio.sleep(0.05)
    dropped.cancel()  # still queued behind `busy`: it never runs
    gate.set()
    await busy
    await asyncio.sleep(0.05)
    ran_on = await writer.call(lambda conn: threading.current_thread().name, inline=True)
    assert ran_on == threading.current_thread().name


async def test_an_inline_write_never_waits_for_another_programs_lock_on_the_loop(sqlite_store: SQLiteJobStore) -> None:
    """Another program holding the database's write lock: the job's write goes to the writer's thread and waits
    there, while the loop goes on; it is stored once the lock is let go."""
    job = make_job()
    await sqlite_store.insert(job, params={}, owner_id="o", lease_until=0)
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    tick = asyncio.ensure_future(ticker())
    job.status = JobStatus.running
    save = asyncio.ensure_future(sqlite_store.save(job, seq=1))
    await asyncio.sleep(0.3)
    assert not save.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(save, 5)
    tick.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.2, max(gaps)  # the loop was never held (SQLite's busy wait is 5 s)
    stored = await sqlite_store.load(job.id)
    assert stored is not None and stored.job.status is JobStatus.running


async def test_pruning_runs_on_the_writers_thread(sqlite_store: SQLiteJobStore) -> None:
    import threading

    from app.store import jobs as store_module

    ran_on: list[str] = []
    real = store_module._transaction

    def transaction(conn: sqlite3.Connection, statements: list[tuple[str, tuple[object, ...]]]) -> list[int]:
        ran_on.append(threading.current_thread().name)
        return real(conn, statements)

    store_module._transaction = transaction  # type: ignore[assignment]
    try:
        await sqlite_store.prune(utcnow() - timedelta(days=1))
    finally:
        store_module._transaction = real  # type: ignore[assignment]
    assert ran_on and all(name.startswith("jobs-db-writer") for name in ran_on)

"""The embedded job database: `JobStore` (app.jobs.store) on SQLite, with idempotency keys and the audit trail.

The SQLite store keeps `<data_dir>/jobs.sqlite3` in WAL mode with one writer connection on a thread of its own
(every write is one transaction, `BEGIN IMMEDIATE`, run there whole: one hop from the event loop) and one reader
connection.

Durability: WAL with `synchronous=NORMAL`. A commit is a write to the WAL file and no fsync: it survives the
gateway process dying (the kernel holds the written pages); a power loss may lose the last commits, never
corrupting the database. The fsyncs come when WAL frames are copied back into the database (a checkpoint). The
writer never does that itself (`wal_autocheckpoint=0`): a checkpointer connection of its own does, in the background,
`checkpoint_interval` seconds after writes (and the last connection closed checkpoints in full), so that no job
write waits for an fsync. The schema
carries its version (`PRAGMA user_version`) and is migrated forward at open. An exclusive lock file next to the
database makes sure one gateway process at a time uses it, so every unfinished job found at start-up belongs to a
dead process. Rows carry `owner_id` and `lease_until` so that a shared store for several replicas can claim the jobs
of a replica whose lease ran out, without any change in the callers.

A job's captured output (`stdout`/`stderr` of its result) lives in its own table, `job_outputs`: listings read only
the small columns of `jobs` and never load an output (they know only that there is one, `has_output`). Each row also
keeps the id of the token that started it (`token_id`), to which its params and output belong.
"""


from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from app.jobs.models import Job, rfc3339
from app.jobs.store import IdempotencyRecord, JobFilter, ListedJob, StoredJob, StoreLocked
from app.store.datadir import FILE_MODE, MIN_FREE_BYTES, StorageFull, free_bytes, is_storage_full, private_file
from app.store.rows import AUDIT_COLUMNS, list_query, result_parts, row_to_job, row_to_stored
from app.store.rows import dumps as _dumps
from app.store.rows import ts as _ts

log = logging.getLogger("app.store.jobs")

T = TypeVar("T")
DB_NAME = "jobs.sqlite3"
"""The job database's file name in the data directory."""
SCHEMA_VERSION = 5
CHECKPOINT_INTERVAL = 1.0
"""Seconds after a write until the background WAL checkpoint."""
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE jobs (
        position     INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        kind         TEXT NOT NULL,
        status       TEXT NOT NULL,
        remote       TEXT,
        project      TEXT,
        resource     TEXT,
        requested_by TEXT,
        request_id   TEXT,
        created_at   TEXT NOT NULL,
        started_at   TEXT,
        finished_at  TEXT,
        progress     TEXT NOT NULL DEFAULT '{}',
        operations   TEXT NOT NULL DEFAULT '[]',
        result       TEXT,
        error        TEXT,
        params       TEXT NOT NULL DEFAULT '{}',
        checkpoints  TEXT NOT NULL DEFAULT '{}',
        seq          INTEGER NOT NULL DEFAULT 0,
        owner_id     TEXT,
        lease_until  REAL
    );
    CREATE INDEX jobs_status ON jobs (status, position);
    CREATE INDEX jobs_kind ON jobs (kind, position);
    CREATE INDEX jobs_resource ON jobs (resource, position);
    CREATE INDEX jobs_finished ON jobs (finished_at);
    CREATE TABLE idempotency (
        scope        TEXT NOT NULL,
        key          TEXT NOT NULL,
        fingerprint  TEXT NOT NULL,
        job_id       TEXT,
        created_at   REAL NOT NULL,
        expires_at   REAL NOT NULL,
        owner_id     TEXT,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_expires ON idempotency (expires_at);
    """,
    2: """
    CREATE TABLE audit (
        position     INTEGER PRIMARY KEY AUTOINCREMENT,
        time         TEXT NOT NULL,
        token        TEXT,
        remote       TEXT,
        project      TEXT,
        method       TEXT NOT NULL,
        path         TEXT NOT NULL,
        resource     TEXT,
        job_id       TEXT,
        status       INTEGER NOT NULL,
        outcome      TEXT NOT NULL,
        request_id   TEXT
    );
    CREATE INDEX audit_time ON audit (time);
    """,
    # Output apart from the job row (listings never read it); the token a job belongs to.
    3: """
    ALTER TABLE jobs ADD COLUMN token_id TEXT;
    ALTER TABLE jobs ADD COLUMN has_output INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE job_outputs (
        job_id       TEXT PRIMARY KEY,
        output       TEXT NOT NULL
    );
    INSERT INTO job_outputs (job_id, output)
        SELECT id, json_set('{}', '$.stdout', json_extract(result, '$.stdout'),
                            '$.stderr', json_extract(result, '$.stderr'))
        FROM jobs WHERE json_type(result, '$.stdout') IS NOT NULL OR json_type(result, '$.stderr') IS NOT NULL;
    UPDATE jobs SET result = json_remove(result, '$.stdout', '$.stderr'), has_output = 1
        WHERE id IN (SELECT job_id FROM job_outputs);
    CREATE INDEX jobs_scope ON jobs (project, remote, position);
    """,
    # What a failed or cancelled job still has to undo (retried until done).
    4: """
    ALTER TABLE jobs ADD COLUMN cleanup TEXT;
    CREATE INDEX jobs_cleanup ON jobs (position) WHERE cleanup IS NOT NULL;
    """,
    # The web console's sessions (app.store.sessions): the sha256 of the session id, never the id.
    5: """
    CREATE TABLE ui_sessions (
        id_hash      TEXT PRIMARY KEY,
        token_id     TEXT NOT NULL,
        csrf         TEXT NOT NULL,
        created_at   REAL NOT NULL,
        expires_at   REAL NOT NULL
    );
    CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
    """,
}

_LIST_COLUMNS = ("position, id, kind, status, remote, project, resource, requested_by, created_at, started_at, "
                 "finished_at, progress, operations, result, error, token_id, has_output, cleanup")
"""What a listing reads: never params, checkpoints or output."""
_COLUMNS = ("jobs.position, jobs.id, kind, status, remote, project, resource, requested_by, request_id, created_at, "
            "started_at, finished_at, progress, operations, result, error, params, checkpoints, seq, owner_id, "
            "lease_until, token_id, has_output, cleanup, job_outputs.output AS output")
_FROM = "jobs LEFT JOIN job_outputs ON job_outputs.job_id = jobs.id"


Statement = tuple[str, tuple[Any, ...]]


def _set_up_writer(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer does it, off the writer's way
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _transaction(conn: sqlite3.Connection, statements: list[Statement]) -> list[int]:
    """Run `statements` in one transaction (on the writer's thread); the row count of each."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        counts = [conn.execute(sql, args).rowcount for sql, args in statements]
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise
    return counts


def _roll_back(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # SQLite may have rolled back already (e.g. a full disk)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to `SCHEMA_VERSION`, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"job database {path} has schema version {version}, newer than this gateway's "
                               f"({SCHEMA_VERSION}); upgrade the gateway")
        for v in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[v].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={v}")
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise


BUSY_TIMEOUT_MS = 5000
"""How long a write on the writer's thread waits for another connection's lock."""
INLINE_MAX_BYTES = 64 * 1024
"""Writes carrying at most this much text are run inline when the writer is idle (see `_Writer`)."""


def _small(statements: list[Statement]) -> bool:
    """Whether `statements` (with their values) carry at most `INLINE_MAX_BYTES` of text."""
    total = 0
    stack: list[Any] = list(statements)
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
            if total > INLINE_MAX_BYTES:
                return False
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


class _Busy(Exception):
    """An inline write found the database locked by another connection: it goes to the writer's thread instead."""


def _without_waiting(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` with SQLite's busy wait off (`_Busy` when the database is locked): the event loop never
    waits for another connection's lock. (Only another program writing the file can hold it: the gateway's own
    reader never writes, and its checkpoints are PASSIVE.)"""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        return fn(conn, *args)
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or \
                "locked" in str(exc):
            raise _Busy from exc
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class _Writer:
    """The one writer connection. Each call runs whole, in the order made: on the writer's own thread, or, when the
    caller allows it (`inline`) and nothing is queued for that thread, at once on the caller's (the event loop's)
    thread.

    A job's small write in WAL mode without fsync takes SQLite tens of microseconds; the two thread hops around it,
    and the GIL handed back and forth at each statement while the loop is busy, took milliseconds (measured: 3 ms
    from a job's end to its row stored, against 0.5 ms inline). Only a job's own writes (insert, save, checkpoint)
    may run inline, and only small ones: large writes (a job's output) and deletes of many rows (pruning) go to the
    thread, so the loop never waits behind them."""

    def __init__(self, path: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-db-writer")
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._outstanding = 0  # calls handed to the thread and not done (or dropped) yet
        self._closing = False

    async def call(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """`fn(connection, *args)` on the writer's thread (or inline: see the class)."""
        conn = self._conn
        if inline and conn is not None and not self._closing and self._outstanding == 0:
            try:
                return _without_waiting(conn, fn, *args)
            except _Busy:
                pass
        return await self._submit(partial(self._run, fn, *args))

    async def _submit(self, work: Callable[[], T]) -> T:
        with self._lock:
            self._outstanding += 1
        future = self._pool.submit(work)
        future.add_done_callback(self._done)  # also when it is cancelled before it ran
        return await asyncio.wrap_future(future)

    def _done(self, _: object) -> None:
        with self._lock:
            self._outstanding -= 1

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
        return fn(self._conn, *args)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        self._closing = True
        try:
            await self._submit(self._close)
        finally:
            self._pool.shutdown(wait=False)


class SQLiteJobStore:
    """The embedded store: `<data_dir>/jobs.sqlite3`."""

    shared = False

    def __init__(self, path: Path, *, checkpoint_interval: float = CHECKPOINT_INTERVAL) -> None:
        self.path = path
        self.checkpoint_interval = checkpoint_interval
        self._writer: _Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoints: asyncio.Task[None] | None = None
        self._written = asyncio.Event()
        self._lock_fd: int | None = None
        self._full: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating or migrating) the database. Raises `StoreLocked` when another process uses it,
        `StorageFull` when its device is full, sqlite3/OS errors for a corrupt or unusable file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"another gateway process uses the job database {self.path}; "
                              "run one process per data directory") from None
        self._lock_fd = fd
        try:
            with self._storage_errors():
                private_file(self.path)  # SQLite gives its -wal and -shm files the database's mode
                self._writer = _Writer(self.path)
                await self._writer.call(_set_up_writer)
                await self._migrate()
                self._reader = await aiosqlite.connect(self.path, isolation_level=None)
                self._reader.row_factory = aiosqlite.Row
                await self._reader.execute("PRAGMA busy_timeout=5000")
                await self._reader.execute("PRAGMA query_only=1")
                self._checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
                await self._checkpointer.execute("PRAGMA busy_timeout=5000")
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(f"{self.path}{suffix}", FILE_MODE)
            self._checkpoints = asyncio.get_running_loop().create_task(self._checkpoint_loop(),
                                                                      name="jobs-db-checkpoints")
        except BaseException:
            await self.close()
            raise

    async def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database (with its fsyncs) off the writer's way, a while after writes."""
        while True:
            await self._written.wait()
            await asyncio.sleep(self.checkpoint_interval)
            self._written.clear()
            try:
                await self.checkpoint()
            except Exception as exc:  # a full disk, say: the WAL keeps the commits; tried again after more writes
                log.warning("checkpointing the job database failed: %s", exc)

    async def checkpoint(self) -> tuple[int, int, int]:
        """One passive WAL checkpoint (it never waits for the writer): (1 when it could not run at all, frames in
        the WAL, frames copied into the database)."""
        if self._checkpointer is None:
            raise RuntimeError("job store is not open")
        async with self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    async def check(self) -> None:
        """Read every page (`PRAGMA quick_check`) and write once: raises what a corrupt database or a full device
        raises (sqlite3.DatabaseError, `StorageFull`)."""
        async with self._r.execute("PRAGMA quick_check") as cur:
            rows = [r[0] for r in await cur.fetchall()]
        if rows != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(str(r) for r in rows[:3]))
        await self._probe_write()

    async def _probe_write(self) -> None:
        if free_bytes(self.path.parent) < MIN_FREE_BYTES:
            raise StorageFull(self.path.parent, "no space left on device")
        await self._write_all([(f"PRAGMA user_version={SCHEMA_VERSION}", ())])

    async def check_writable(self) -> str | None:
        """None when the store can write; else why not (the device is full, the last write failed...)."""
        try:
            if self._full is not None or free_bytes(self.path.parent) < MIN_FREE_BYTES:
                await self._probe_write()
        except StorageFull as exc:
            return str(exc)
        except Exception as exc:
            return f"the job database {self.path} cannot be written: {exc}"
        return None

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Turn a write refused for lack of space into `StorageFull` (and remember it until a write succeeds)."""
        try:
            yield
        except StorageFull as exc:
            self._full = exc.reason
            raise
        except (sqlite3.Error, OSError) as exc:
            io_error = isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == 10
            if not (is_storage_full(exc) or (io_error and free_bytes(self.path.parent) < MIN_FREE_BYTES)):
                raise
            self._full = str(exc)
            raise StorageFull(self.path.parent, str(exc)) from exc
        self._full = None

    async def _on_writer(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """`fn(connection, *args)` on the writer's thread, with a full device turned into `StorageFull`. Nothing is
        written while the device counts as full (less than `MIN_FREE_BYTES` free), even where the WAL would still
        have room: the store refuses exactly while it reports itself not writable."""
        with self._storage_errors():
            result = await self._w.call(self._unless_full, fn, *args, inline=inline)
        self._written.set()
        return result

    def _unless_full(self, conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
        if free_bytes(self.path.parent) < MIN_FREE_BYTES:
            raise StorageFull(self.path.parent, "no space left on device")
        return fn(conn, *args)

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        for conn in (self._reader, self._checkpointer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the last connection closed checkpoints the WAL in full
                await self._writer.close()
        self._reader = self._checkpointer = self._writer = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    async def _migrate(self) -> None:
        await self._on_writer(_migrate, self.path)

    @property
    def _w(self) -> _Writer:
        if self._writer is None:
            raise RuntimeError("job store is not open")
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("job store is not open")
        return self._reader

    async def _write(self, sql: str, args: tuple[Any, ...] = (), *, job_write: bool = False) -> int:
        """One statement in a transaction of its own; its row count."""
        return (await self._write_all([(sql, args)], job_write=job_write))[0]

    async def _write_all(self, statements: list[Statement], *, job_write: bool = False) -> list[int]:
        """Several writes in one transaction; the row count of each. A job's own small write (`job_write`) may run
        inline (see `_Writer`)."""
        return await self._on_writer(_transaction, statements, inline=job_write and _small(statements))

    @staticmethod
    def _result_writes(job: Job) -> tuple[str | None, int, list[tuple[str, tuple[Any, ...]]]]:
        """The result column without output, `has_output`, and the writes that keep `job_outputs` in step."""
        result, output = result_parts(job)
        if output is None:
            return result, 0, [("DELETE FROM job_outputs WHERE job_id=?", (job.id,))]
        return result, 1, [("INSERT OR REPLACE INTO job_outputs (job_id, output) VALUES (?, ?)", (job.id, output))]

    # -- jobs ---------------------------------------------------------------------------------------------------

    async def insert(self, job: Job, *, params: dict[str, Any], owner_id: str, lease_until: float,
                     request_id: str | None = None) -> None:
        result, has_output, output_writes = self._result_writes(job)
        await self._write_all([(
            "INSERT INTO jobs (id, kind, status, remote, project, resource, requested_by, request_id, created_at, "
            "started_at, finished_at, progress, operations, result, error, params, owner_id, lease_until, token_id, "
            "has_output) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.kind, job.status.value, job.remote, job.project, job.resource, job.requested_by,
             request_id, _ts(job.created_at), _ts(job.started_at), _ts(job.finished_at),
             _dumps(job.progress.model_dump()), _dumps([o.model_dump() for o in job.lxd_operations]), result,
             _dumps(job.error) if job.error is not None else None, _dumps(params), owner_id, lease_until,
             job.token_id, has_output),
        ), *(output_writes if has_output else [])], job_write=True)

    async def save(self, job: Job, *, seq: int, owner_id: str | None = None) -> None:
        # One process holds every job of this store (its lock file): `owner_id` needs no check.
        result, has_output, output_writes = self._result_writes(job)
        await self._write_all([(
            "UPDATE jobs SET status=?, started_at=?, finished_at=?, progress=?, operations=?, result=?, error=?, "
            "resource=?, has_output=?, cleanup=?, seq=MAX(seq, ?) WHERE id=?",
            (job.status.value, _ts(job.started_at), _ts(job.finished_at), _dumps(job.progress.model_dump()),
             _dumps([o.model_dump() for o in job.lxd_operations]), result,
             _dumps(job.error) if job.error is not None else None, job.resource, has_output,
             _dumps(job.cleanup.model_dump(mode="json")) if job.cleanup is not None else None, seq, job.id),
        ), *output_writes], job_write=True)

    async def save_checkpoint(self, job_id: str, step: str, data: Any, *, owner_id: str | None = None) -> None:
        await self._write("UPDATE jobs SET checkpoints=json_set(checkpoints, '$.' || json_quote(?), json(?)) "
                          "WHERE id=?", (step, _dumps(data), job_id), job_write=True)

    async def pending_cleanups(self) -> list[StoredJob]:
        """Ended jobs whose undoing could not be done yet (`cleanup.status` is `pending`), oldest first."""
        async with self._r.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE cleanup IS NOT NULL AND "
                                   "json_extract(cleanup, '$.status')='pending' ORDER BY jobs.position") as cur:
            rows = await cur.fetchall()
        return [row_to_stored(r) for r in rows]

    async def get(self, job_id: str) -> Job | None:
        stored = await self.load(job_id)
        return stored.job if stored else None

    async def load(self, job_id: str) -> StoredJob | None:
        async with self._r.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE jobs.id=?", (job_id,)) as cur:
            row = await cur.fetchone()
        return row_to_stored(row) if row else None

    async def list(self, flt: JobFilter, *, limit: int, before: int | None = None,
                   remotes: tuple[str, ...] | None = None,
                   projects: tuple[str, ...] | None = None) -> list[ListedJob]:
        query = list_query(flt, limit=limit, before=before, remotes=remotes, projects=projects,
                           columns=_LIST_COLUMNS, mark="?")
        if query is None:
            return []
        sql, args = query
        async with self._r.execute(sql, tuple(args)) as cur:
            rows = await cur.fetchall()
        return [ListedJob(row_to_job(r), r["position"], bool(r["has_output"])) for r in rows]

    async def claim_unfinished(self, owner_id: str, lease_until: float) -> list[StoredJob]:
        # The lock file guarantees no other live process uses this database: every unfinished job is orphaned,
        # whatever its lease says. A shared store would claim only rows whose lease ran out.
        def claim(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE status IN ('queued', 'running') "
                                    "ORDER BY jobs.position").fetchall()
                conn.execute("UPDATE jobs SET owner_id=?, lease_until=? WHERE status IN ('queued', 'running')",
                             (owner_id, lease_until))
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
            return rows

        claimed = [row_to_stored(r) for r in await self._on_writer(claim)]
        for s in claimed:
            s.owner_id, s.lease_until = owner_id, lease_until
        return claimed

    async def claim_expired(self, owner_id: str, lease_until: float) -> list[StoredJob]:
        return []  # one process: `claim_unfinished` at its start took every job

    async def request_cancel(self, job_id: str) -> bool:
        return False  # one process: every unfinished job is its own, cancelled directly

    async def cancel_requests(self, owner_id: str) -> list[str]:
        return []

    async def listen_cancels(self, callback: Callable[[str], None]) -> None:
        return None

    async def renew_leases(self, owner_id: str, lease_until: float,
                           job_ids: list[str] | None = None) -> list[str]:
        await self._write("UPDATE jobs SET lease_until=? WHERE owner_id=? AND status IN ('queued', 'running')",
                          (lease_until, owner_id))
        return []

    async def prune(self, finished_before: datetime) -> int:
        old = ("finished_at IS NOT NULL AND finished_at<? AND status IN ('succeeded', 'failed', 'cancelled')",
               (rfc3339(finished_before),))
        counts = await self._write_all([
            (f"DELETE FROM job_outputs WHERE job_id IN (SELECT id FROM jobs WHERE {old[0]})", old[1]),
            (f"DELETE FROM jobs WHERE {old[0]}", old[1]),
        ])
        return counts[1]

    # -- idempotency --------------------------------------------------------------------------------------------

    async def idempotency_reserve(self, scope: str, key: str, fingerprint: str, *, owner_id: str, now: float,
                                  ttl: float) -> tuple[IdempotencyRecord, bool]:
        """Return the live record for (scope, key) and whether this call created it.

        An expired record, or a reservation left without a job by a dead process, is replaced.
        """
        def reserve(conn: sqlite3.Connection) -> tuple[IdempotencyRecord, bool]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT scope, key, fingerprint, job_id, created_at, expires_at, owner_id "
                                   "FROM idempotency WHERE scope=? AND key=?", (scope, key)).fetchone()
                if row is not None:
                    record = IdempotencyRecord(*tuple(row))
                    stale = record.expires_at <= now or (record.job_id is None and record.owner_id != owner_id)
                    if not stale:
                        conn.execute("COMMIT")
                        return record, False
                    conn.execute("DELETE FROM idempotency WHERE scope=? AND key=?", (scope, key))
                record = IdempotencyRecord(scope, key, fingerprint, None, now, now + ttl, owner_id)
                conn.execute("INSERT INTO idempotency (scope, key, fingerprint, job_id, created_at, expires_at, "
                             "owner_id) VALUES (?, ?, ?, NULL, ?, ?, ?)",
                             (scope, key, fingerprint, now, now + ttl, owner_id))
                conn.execute("COMMIT")
                return record, True
            except BaseException:
                _roll_back(conn)
                raise

        return await self._on_writer(reserve)

    async def idempotency_complete(self, scope: str, key: str, job_id: str) -> None:
        await self._write("UPDATE idempotency SET job_id=? WHERE scope=? AND key=?", (job_id, scope, key))

    async def idempotency_release(self, scope: str, key: str) -> None:
        await self._write("DELETE FROM idempotency WHERE scope=? AND key=? AND job_id IS NULL", (scope, key))

    async def idempotency_prune(self, now: float | None = None) -> int:
        return await self._write("DELETE FROM idempotency WHERE expires_at<=?", (now or time.time(),))

    # -- audit --------------------------------------------------------------------------------------------------

    _AUDIT_COLUMNS = AUDIT_COLUMNS

    async def audit_append(self, entry: dict[str, Any]) -> None:
        cols = self._AUDIT_COLUMNS
        await self._write(f"INSERT INTO audit ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                          tuple(entry.get(c) for c in cols))

    async def audit_list(self, *, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT position, {', '.join(self._AUDIT_COLUMNS)} FROM audit"
        args: tuple[Any, ...] = ()
        if before is not None:
            sql += " WHERE position < ?"
            args = (before,)
        sql += " ORDER BY position DESC LIMIT ?"
        async with self._r.execute(sql, (*args, limit)) as cur:
            return [dict(row) for row in await cur.fetchall()]

    async def audit_prune(self, before: datetime) -> int:
        return await self._write("DELETE FROM audit WHERE time < ?", (rfc3339(before),))

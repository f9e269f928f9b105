"""The shared job database: `JobStore` (app.jobs.store) on PostgreSQL, for any number of gateway processes.

Chosen by `LXDGW_DATABASE_URL=postgresql://...` (`app.store.database`); psycopg is imported only then. Same rows and
semantics as the SQLite store (`app.store.jobs`; the row <-> `Job` mapping is `app.store.rows`), with what sharing
needs:

- **Schema.** Versioned migrations (`app.store.pg_schema`) applied at open on one connection holding
  `pg_advisory_lock`, each in its own transaction, recorded in `schema_version`: replicas starting together apply
  each migration once, and one finding a newer schema than it knows refuses to start.
- **Leases.** Every unfinished job carries its owner (a gateway process) and a lease (epoch seconds) the owner
  renews. `claim_unfinished` takes only jobs whose lease ran out (or the caller's own) in one
  `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`: replicas claiming at once never get the same job. A
  replica's heartbeat (`replicas.alive_until`) is renewed with its leases; an idempotency reservation left without
  a job is taken over only when its owner's heartbeat ran out.
- **Reservations.** A name being created (`reserve_name`) and a place under a token's cap of unfinished jobs
  (`reserve_job_slot`, counted under a transaction lock per token) are reserved in the database, so they hold
  across replicas; both lapse with their owner's heartbeat or their expiry, and a name is free once its job ends.
  A pending cleanup is retried by its job's owner only, or by whoever outlives a dead owner
  (`claim_pending_cleanups`).
- **Connections.** A pool (psycopg_pool) of autocommit connections, each checked when taken. A call that gets no
  connection within `QUICK_WAIT` connects once itself: when that fails (the server down or unreachable; connecting
  gives up after `connect_timeout`), or when its connection breaks, it raises `StoreUnavailable` (the API answers
  503); when it works (the pool is only busy), the call waits up to `timeout` in all. After such a failure, calls
  fail at once, and at most every `PROBE_INTERVAL` one of them tries a connection: the first that succeeds starts a
  fresh pool, so the store is back as soon as the server is, without waiting out the pool's reconnection back-off.
  The URL's password never appears in an error or log line of the gateway.
- **Notifications.** One connection per process LISTENs (`listen_cancels`, `listen_messages`): on `jobs` (a cancel
  for the owner of a job) and `job_messages` (`<job_id>:<seq>`: the owner of a job wrote messages of its stream to
  `job_messages`, which the processes following the job read; only ids travel, the rows hold the messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.jobs.models import Job, rfc3339
from app.jobs.store import IdempotencyRecord, JobFilter, LeaseLost, ListedJob, StoredJob
from app.store.errors import StoreUnavailable
from app.store.pg_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from app.store.rows import (
    AUDIT_COLUMNS,
    LIST_COLUMNS,
    STORED_COLUMNS,
    dumps,
    job_values,
    list_query,
    row_to_job,
    row_to_stored,
)
from app.tasks import cancel_and_wait

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("app.store")
JOBS_CHANNEL = "jobs"
"""Notified with a job's id when another replica asks its owner to cancel it."""
Message = tuple[str, int, str, str]
"""A message of a job's stream as stored: the job's id, its seq, its type, its body (`{"job", "data"}`, JSON text)."""
MESSAGES_CHANNEL = "job_messages"
"""Notified with `<job_id>:<seq>` (the last of them) when a job's owner wrote messages of its stream."""
LISTEN_RETRY = 1.0
JOB_SLOT_LOCK = 0x6C786777
"""The first key of the transaction lock under which one token's places under its job cap are counted and taken."""

_STORED = ", ".join(f"jobs.{c}" for c in STORED_COLUMNS) + ", job_outputs.output AS output"
_FROM = "jobs LEFT JOIN job_outputs ON job_outputs.job_id = jobs.id"
_UNFINISHED = "status IN ('queued', 'running')"
_ENDED = "status IN ('succeeded', 'failed', 'cancelled')"
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300")
"""Server shutting down (admin, crash), starting up, too many connections; class 08 (connection) too."""

DEFAULT_CONNECT_TIMEOUT = 3
"""Seconds to establish one connection (libpq's `connect_timeout`) unless the URL sets it."""
DEFAULT_POOL_TIMEOUT = 3.0
"""Seconds a store call waits for a connection before it fails with `StoreUnavailable`."""
DEFAULT_POOL_SIZE = 10
PROBE_INTERVAL = 0.5
"""While the server is unreachable, calls fail at once, and at most this often one of them tries to connect."""
QUICK_WAIT = 0.5
"""Seconds a call waits for a pooled connection before it checks, by connecting once, that the server is there."""


def _unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the server cannot be reached (rather than refusing one statement)."""
    import psycopg
    from psycopg_pool import PoolClosed, PoolTimeout

    if isinstance(exc, PoolClosed):
        return True
    if isinstance(exc, PoolTimeout):
        return False  # every connection busy; the server itself answered the probe (see `connection`)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        state = getattr(exc, "sqlstate", None)
        return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES
    return False


def _reservation_key(key: tuple[str, ...]) -> dict[str, str]:
    """A reservation's key, e.g. ("container", remote, project, name), as the columns of `name_reservations`."""
    kind, remote, project, *name = (*key, "", "", "")[:max(4, len(key))]
    return {"kind": kind, "remote": remote or "", "project": project or "", "name": "/".join(name)}


def _reason(exc: BaseException) -> str:
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout):
        return "no connection to it could be made in time"
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresJobStore:
    """The shared store: one PostgreSQL database, any number of gateway processes."""

    shared = True

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, timeout: float = DEFAULT_POOL_TIMEOUT,
                 connect_timeout: int = DEFAULT_CONNECT_TIMEOUT) -> None:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(url)
        params.setdefault("connect_timeout", str(connect_timeout))
        params.setdefault("application_name", "lxd-gateway")
        self._conninfo = make_conninfo(**params)
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: AsyncConnectionPool | None = None
        self._down: float | None = None
        """When (monotonic) the server was last found unreachable; None while it answers."""
        self._down_reason = ""
        self._probed = -PROBE_INTERVAL
        self._revive_lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._notified: dict[str, Callable[[str], None]] = {}
        """What the listening connection LISTENs on: a callback per channel."""

    @property
    def conninfo(self) -> str:
        """The libpq connection string, password included (never log it): for a connection of its own, e.g. one
        that LISTENs."""
        return self._conninfo

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bring the schema up to date. Raises `StoreUnavailable` when the server cannot be reached
        (naming why), `RuntimeError` when the schema is newer than this gateway's, psycopg errors otherwise."""
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailable(_reason(exc)) from None
        try:
            await self._configure(conn)
            await self._migrate(conn)
        except psycopg.Error as exc:
            if _unavailable(exc):
                raise StoreUnavailable(_reason(exc)) from None
            raise
        finally:
            await conn.close()
        self._pool, self._down = await self._new_pool(), None

    async def _new_pool(self) -> AsyncConnectionPool:
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(self._conninfo, min_size=1, max_size=self.pool_size, timeout=self.timeout,
                                   kwargs={"autocommit": True}, configure=self._configure,
                                   check=AsyncConnectionPool.check_connection, open=False, name="job-store")
        await pool.open(wait=False)
        return pool

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        """Every connection: times in UTC, rows as dicts, JSON read as text (as `app.store.rows` maps it)."""
        from psycopg.rows import dict_row
        from psycopg.types.string import TextLoader

        conn.row_factory = dict_row  # type: ignore[assignment]
        for name in ("json", "jsonb"):
            conn.adapters.register_loader(name, TextLoader)
        await conn.execute("SET TIME ZONE 'UTC'")

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                               "applied_at timestamptz NOT NULL DEFAULT now())")
            cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_version")
            row = await cur.fetchone()
            version = int(row["v"]) if row else 0  # type: ignore[call-overload]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"the job database has schema version {version}, newer than this gateway's "
                                   f"({SCHEMA_VERSION}); upgrade the gateway")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                async with conn.transaction():
                    await conn.execute(MIGRATIONS[v].encode())
                    await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (v,))
        finally:
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        await cancel_and_wait(listener)
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close(timeout=5)

    async def check(self) -> None:
        """Read and write once: raises `StoreUnavailable` or the database's error (a read-only server...)."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT count(*) FROM schema_version")
            await conn.execute("CREATE TEMPORARY TABLE write_probe (x integer) ON COMMIT DROP")

    async def check_writable(self) -> str | None:
        """None when the store can write; else why not (unreachable, a read-only standby...)."""
        try:
            async with self.connection() as conn:
                cur = await conn.execute("SELECT pg_is_in_recovery() AS standby, "
                                         "current_setting('default_transaction_read_only') AS ro")
                row = await cur.fetchone()
        except StoreUnavailable as exc:
            return str(exc)
        except Exception as exc:
            return f"the job database cannot be used: {_reason(exc)}"
        if row and (row["standby"] or row["ro"] == "on"):  # type: ignore[call-overload]
            return "the job database is read-only (a standby server, or default_transaction_read_only)"
        return None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection (autocommit; rows as dicts, JSON as text, times in UTC); losing the server becomes
        `StoreUnavailable` (at once while it stays away). Whatever else keeps its state in this database (its own
        tables added to `app.store.pg_schema.MIGRATIONS`) may use it."""
        if self._pool is None:
            raise RuntimeError("job store is not open")
        if self._down is not None:
            await self._revive()
        try:
            async with self._pool.connection(timeout=min(QUICK_WAIT, self.timeout)) as conn:
                yield conn
            return
        except StoreUnavailable:
            raise
        except Exception as exc:
            from psycopg_pool import PoolTimeout

            if not isinstance(exc, PoolTimeout):
                self._failed(exc)
                raise
            if self.timeout <= QUICK_WAIT:
                await self._probe()
                raise self._busy() from None
        # No connection at once: the pool is busy, or the server is gone. Connecting tells which.
        await self._probe()
        try:
            async with self._pool.connection(timeout=self.timeout - QUICK_WAIT) as conn:
                yield conn
        except StoreUnavailable:
            raise
        except Exception as exc:
            from psycopg_pool import PoolTimeout

            if isinstance(exc, PoolTimeout):  # the server answered the probe: busy, not gone (nothing is reset)
                raise self._busy() from None
            self._failed(exc)
            raise

    def _busy(self) -> StoreUnavailable:
        return StoreUnavailable(f"all {self.pool_size} connections of this process to the job database stayed busy "
                                f"for {self.timeout:g}s")

    def _failed(self, exc: BaseException) -> None:
        """Raise `StoreUnavailable` for an error saying the server is gone (and remember it); else return."""
        if _unavailable(exc):
            self._down, self._down_reason = time.monotonic(), _reason(exc)
            raise StoreUnavailable(self._down_reason) from None

    async def _probe(self) -> None:
        """Connect once (or rely on a connection made less than `PROBE_INTERVAL` ago): `StoreUnavailable` when that
        fails."""
        async with self._revive_lock:
            if time.monotonic() - self._probed < PROBE_INTERVAL:
                return
            await self._connect_once()

    async def _connect_once(self) -> None:
        """Connect and close again (under `_revive_lock`): `StoreUnavailable` when that fails (and remember it)."""
        import psycopg

        try:
            probe = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            self._down, self._down_reason = time.monotonic(), _reason(exc)
            raise StoreUnavailable(self._down_reason) from None
        await probe.close()
        self._probed = time.monotonic()

    async def _revive(self) -> None:
        """After the server was found unreachable: fail at once, or (at most every `PROBE_INTERVAL`) connect once;
        when that works, start a fresh pool (the old one may be waiting out a long reconnection back-off)."""
        async with self._revive_lock:
            if self._down is None:
                return
            if time.monotonic() - self._down < PROBE_INTERVAL:
                raise StoreUnavailable(self._down_reason)
            await self._connect_once()
            old, self._pool = self._pool, await self._new_pool()
            self._down = None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.close(timeout=0.5)

    async def _execute(self, sql: str, args: Any = None) -> int:
        async with self.connection() as conn:
            cur = await conn.execute(sql, args)
            return cur.rowcount

    async def _fetch(self, sql: str, args: Any = None) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchall()  # type: ignore[return-value]

    # -- jobs ---------------------------------------------------------------------------------------------------

    @staticmethod
    async def _write_output(conn: psycopg.AsyncConnection[Any], job_id: str, output: str | None) -> None:
        if output is None:
            await conn.execute("DELETE FROM job_outputs WHERE job_id=%s", (job_id,))
        else:
            await conn.execute("INSERT INTO job_outputs (job_id, output) SELECT id, %s::json FROM jobs WHERE id=%s "
                               "ON CONFLICT (job_id) DO UPDATE SET output=excluded.output", (output, job_id))

    async def insert(self, job: Job, *, params: dict[str, Any], owner_id: str, lease_until: float,
                     request_id: str | None = None) -> None:
        v = job_values(job)
        async with self.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO jobs (id, kind, status, remote, project, resource, requested_by, request_id, created_at, "
                "started_at, finished_at, progress, operations, result, error, params, owner_id, lease_until, "
                "token_id, has_output) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::json, "
                "%s::json, %s::json, %s::json, %s, %s, %s, %s)",
                (job.id, job.kind, v["status"], job.remote, job.project, job.resource, job.requested_by, request_id,
                 job.created_at, job.started_at, job.finished_at, v["progress"], v["operations"], v["result"],
                 v["error"], dumps(params), owner_id, lease_until, job.token_id, v["output"] is not None))
            if v["output"] is not None:
                await self._write_output(conn, job.id, v["output"])

    async def save(self, job: Job, *, seq: int, owner_id: str | None = None) -> None:
        """Store the job as it is. With `owner_id`, only while that process owns it: else nothing is written and
        `LeaseLost` is raised (another process claimed it)."""
        v = job_values(job)
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE jobs SET status=%s, started_at=%s, finished_at=%s, progress=%s::json, operations=%s::json, "
                "result=%s::json, error=%s::json, resource=%s, has_output=%s, cleanup=%s::json, "
                "seq=GREATEST(seq, %s) WHERE id=%s AND (%s::text IS NULL OR owner_id=%s)",
                (v["status"], job.started_at, job.finished_at, v["progress"], v["operations"], v["result"],
                 v["error"], job.resource, v["output"] is not None, v["cleanup"], seq, job.id, owner_id, owner_id))
            if owner_id is not None and cur.rowcount == 0:
                raise LeaseLost(job.id)
            await self._write_output(conn, job.id, v["output"])

    async def save_checkpoint(self, job_id: str, step: str, data: Any, *, owner_id: str | None = None) -> None:
        count = await self._execute(
            "UPDATE jobs SET checkpoints = checkpoints || jsonb_build_object(%s::text, %s::jsonb) "
            "WHERE id=%s AND (%s::text IS NULL OR owner_id=%s)", (step, dumps(data), job_id, owner_id, owner_id))
        if owner_id is not None and count == 0:
            raise LeaseLost(job_id)

    async def pending_cleanups(self) -> list[StoredJob]:
        """Ended jobs whose undoing could not be done yet (`cleanup.status` is `pending`), oldest first."""
        rows = await self._fetch(f"SELECT {_STORED} FROM {_FROM} WHERE cleanup IS NOT NULL AND "
                                 "cleanup->>'status' = 'pending' ORDER BY jobs.position")
        return [row_to_stored(r) for r in rows]

    async def claim_pending_cleanups(self, owner_id: str, now: float) -> list[StoredJob]:
        """Pending cleanups `owner_id` is to retry, oldest first: those of its own jobs, and those of jobs whose
        owner is no longer alive (its heartbeat ran out; they become `owner_id`'s). Never those of another live
        replica, which retries them itself; never one to two replicas claiming at once."""
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE jobs SET owner_id=%(owner)s FROM ("
                "  SELECT id FROM jobs WHERE cleanup IS NOT NULL AND cleanup->>'status' = 'pending' AND ("
                "   owner_id IS NULL OR owner_id=%(owner)s OR NOT EXISTS (SELECT 1 FROM replicas WHERE "
                "   replicas.owner_id = jobs.owner_id AND alive_until > %(now)s)) "
                "  ORDER BY position FOR UPDATE SKIP LOCKED"
                ") AS mine WHERE jobs.id=mine.id RETURNING jobs.id", {"owner": owner_id, "now": now})
            return await self._load_claimed(conn, cur)

    async def get(self, job_id: str) -> Job | None:
        stored = await self.load(job_id)
        return stored.job if stored else None

    async def load(self, job_id: str) -> StoredJob | None:
        rows = await self._fetch(f"SELECT {_STORED} FROM {_FROM} WHERE jobs.id=%s", (job_id,))
        return row_to_stored(rows[0]) if rows else None

    async def list(self, flt: JobFilter, *, limit: int, before: int | None = None,
                   remotes: tuple[str, ...] | None = None,
                   projects: tuple[str, ...] | None = None) -> list[ListedJob]:
        query = list_query(flt, limit=limit, before=before, remotes=remotes, projects=projects,
                           columns=", ".join(LIST_COLUMNS), mark="%s")
        if query is None:
            return []
        sql, args = query
        rows = await self._fetch(sql, args)
        return [ListedJob(row_to_job(r), r["position"], bool(r["has_output"])) for r in rows]

    async def claim_unfinished(self, owner_id: str, lease_until: float) -> list[StoredJob]:
        """Take the unfinished jobs whose lease ran out (and those `owner_id` holds already), oldest first.

        Rows another replica is claiming at the same moment are skipped (`SKIP LOCKED`), and a row claimed and
        committed meanwhile no longer matches the expired-lease condition when it is re-checked: a job is never
        given to two replicas. Also renews this replica's heartbeat."""
        return await self._claim(owner_id, lease_until, own=True)

    async def claim_expired(self, owner_id: str, lease_until: float) -> list[StoredJob]:
        """Take the unfinished jobs whose lease ran out, whoever held them (this replica too: a job it gave up
        when it could not renew its lease), oldest first; never one job to two replicas (as `claim_unfinished`)."""
        return await self._claim(owner_id, lease_until, own=False)

    async def _claim(self, owner_id: str, lease_until: float, *, own: bool) -> list[StoredJob]:
        """Give `owner_id` the unfinished jobs whose lease ran out (with `own`, also those it holds already, and
        renew its heartbeat)."""
        now = time.time()
        mine = "owner_id=%(owner)s OR " if own else ""
        async with self.connection() as conn, conn.transaction():
            if own:
                await self._heartbeat(conn, owner_id, lease_until)
            cur = await conn.execute(
                "UPDATE jobs SET owner_id=%(owner)s, lease_until=%(lease)s FROM ("
                f"  SELECT id FROM jobs WHERE {_UNFINISHED} AND (owner_id IS NULL OR {mine}"
                "   lease_until IS NULL OR lease_until<=%(now)s) ORDER BY position FOR UPDATE SKIP LOCKED"
                ") AS claimable WHERE jobs.id=claimable.id RETURNING jobs.id",
                {"owner": owner_id, "lease": lease_until, "now": now})
            return await self._load_claimed(conn, cur)

    @staticmethod
    async def _load_claimed(conn: psycopg.AsyncConnection[Any], cur: psycopg.AsyncCursor[Any]) -> list[StoredJob]:
        """The jobs whose ids an `UPDATE ... RETURNING jobs.id` on `conn` claimed (`cur`), oldest first."""
        ids = [r["id"] for r in await cur.fetchall()]
        if not ids:
            return []
        cur = await conn.execute(f"SELECT {_STORED} FROM {_FROM} WHERE jobs.id = ANY(%s) ORDER BY jobs.position",
                                 (ids,))
        return [row_to_stored(r) for r in await cur.fetchall()]

    @staticmethod
    async def _heartbeat(conn: psycopg.AsyncConnection[Any], owner_id: str, alive_until: float) -> None:
        await conn.execute("INSERT INTO replicas (owner_id, alive_until) VALUES (%s, %s) ON CONFLICT (owner_id) "
                           "DO UPDATE SET alive_until=excluded.alive_until", (owner_id, alive_until))

    async def renew_leases(self, owner_id: str, lease_until: float,
                           job_ids: list[str] | None = None) -> list[str]:
        """Extend the leases of the unfinished jobs `owner_id` holds (only `job_ids` among them when given), and its
        heartbeat (a time in the past gives them up at once: another replica may claim them). Returns the ids
        renewed: a job asked for and not among them is no longer this replica's."""
        async with self.connection() as conn, conn.transaction():
            await self._heartbeat(conn, owner_id, lease_until)
            sql = f"UPDATE jobs SET lease_until=%s WHERE owner_id=%s AND {_UNFINISHED}"
            args: tuple[Any, ...] = (lease_until, owner_id)
            if job_ids is not None:
                sql += " AND id = ANY(%s)"
                args = (*args, list(job_ids))
            cur = await conn.execute(sql + " RETURNING id", args)
            return [r["id"] for r in await cur.fetchall()]  # type: ignore[call-overload]

    async def request_cancel(self, job_id: str) -> bool:
        """Mark an unfinished job to be cancelled by its owner, and notify the `jobs` channel (at commit). False
        when the job is not unfinished (ended, or no such job)."""
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(f"UPDATE jobs SET cancel_requested=true WHERE id=%s AND {_UNFINISHED} "
                                     "RETURNING id", (job_id,))
            if await cur.fetchone() is None:
                return False
            await conn.execute("SELECT pg_notify(%s, %s)", (JOBS_CHANNEL, job_id))
        return True

    async def cancel_requests(self, owner_id: str) -> list[str]:
        """The unfinished jobs of `owner_id` another replica asked to cancel (what a lost notification said)."""
        rows = await self._fetch(f"SELECT id FROM jobs WHERE owner_id=%s AND cancel_requested AND {_UNFINISHED}",
                                 (owner_id,))
        return [r["id"] for r in rows]

    async def listen_cancels(self, callback: Callable[[str], None]) -> None:
        """Call `callback(job_id)` for every cancel another replica asks (a connection of its own that LISTENs on
        the `jobs` channel, connected again after a failure), until `close`."""
        self._listen_on(JOBS_CHANNEL, callback)

    def _listen_on(self, channel: str, callback: Callable[[str], None]) -> None:
        """Add `channel` to what the one listening connection of this store LISTENs on (it reconnects to add it)."""
        self._notified[channel] = callback
        if self._listener is not None:
            self._listener.cancel()
        self._listener = asyncio.get_running_loop().create_task(self._listen(dict(self._notified)),
                                                                name="job-notices")

    async def _listen(self, callbacks: dict[str, Callable[[str], None]]) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    for channel in callbacks:
                        await conn.execute(f"LISTEN {channel}")
                    async for notice in conn.notifies():
                        try:
                            callbacks[notice.channel](notice.payload)
                        except Exception:
                            log.exception("handling the notice %r on %s failed", notice.payload, notice.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for job notices failed (%s); retrying", _reason(exc))
            await asyncio.sleep(LISTEN_RETRY)

    async def prune(self, finished_before: datetime) -> int:
        """Remove jobs ended before `finished_before` (their outputs go with them), and replicas long gone."""
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(f"DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at<%s AND {_ENDED}",
                                     (finished_before,))
            count = cur.rowcount
            await conn.execute("DELETE FROM replicas WHERE alive_until<%s", (finished_before.timestamp(),))
        return count

    # -- job streams (messages for the other replicas) -------------------------------------------------------------

    async def append_messages(self, owner_id: str, messages: list[Message]) -> set[str]:
        """Write stream messages (job id, seq, type, body as JSON text) of jobs `owner_id` owns, and notify
        `job_messages` with each job's last seq (at commit). A message of a job another process owns now is not
        written: returns the ids of those jobs."""
        if not messages:
            return set()
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO job_messages (job_id, seq, type, body) "
                "SELECT m.job_id, m.seq, m.type, m.body::json "
                "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[]) AS m(job_id, seq, type, body) "
                "JOIN jobs ON jobs.id = m.job_id AND jobs.owner_id = %s "
                "ON CONFLICT (job_id, seq) DO NOTHING RETURNING job_messages.job_id, job_messages.seq",
                ([m[0] for m in messages], [m[1] for m in messages], [m[2] for m in messages],
                 [m[3] for m in messages], owner_id))
            last: dict[str, int] = {}
            for r in await cur.fetchall():
                job_id, seq = r["job_id"], r["seq"]  # type: ignore[call-overload]
                last[job_id] = max(seq, last.get(job_id, 0))
            for job_id, seq in last.items():
                await conn.execute("SELECT pg_notify(%s, %s)", (MESSAGES_CHANNEL, f"{job_id}:{seq}"))
        asked = {m[0] for m in messages}
        if len(last) == len(asked):
            return set()
        owned = await self._fetch("SELECT id FROM jobs WHERE id = ANY(%s) AND owner_id = %s",
                                  (list(asked - set(last)), owner_id))
        return asked - set(last) - {r["id"] for r in owned}

    async def read_messages(self, after: dict[str, int], *, limit: int = 1000) -> list[Message]:
        """The messages of the jobs in `after` whose seq is greater than the job's value there, in order per job
        (at most `limit` in all)."""
        if not after:
            return []
        rows = await self._fetch(
            "SELECT m.job_id, m.seq, m.type, m.body FROM job_messages m "
            "JOIN unnest(%s::text[], %s::bigint[]) AS f(job_id, after) ON m.job_id = f.job_id AND m.seq > f.after "
            "ORDER BY m.job_id, m.seq LIMIT %s", (list(after), list(after.values()), limit))
        return [(r["job_id"], int(r["seq"]), r["type"], r["body"]) for r in rows]

    async def recent_messages(self, job_id: str, limit: int) -> list[Message]:
        """The last `limit` messages of a job, in order."""
        rows = await self._fetch("SELECT job_id, seq, type, body FROM (SELECT * FROM job_messages WHERE job_id=%s "
                                 "ORDER BY seq DESC LIMIT %s) AS last ORDER BY seq", (job_id, limit))
        return [(r["job_id"], int(r["seq"]), r["type"], r["body"]) for r in rows]

    async def last_message_seqs(self, job_ids: list[str]) -> dict[str, int]:
        """The greatest seq written (messages or the job's row) of each of the jobs."""
        if not job_ids:
            return {}
        rows = await self._fetch(
            "SELECT jobs.id, GREATEST(jobs.seq, coalesce(max(m.seq), 0)) AS seq FROM jobs "
            "LEFT JOIN job_messages m ON m.job_id = jobs.id WHERE jobs.id = ANY(%s) GROUP BY jobs.id, jobs.seq",
            (list(job_ids),))
        return {r["id"]: int(r["seq"]) for r in rows}

    async def job_states(self, job_ids: list[str]) -> dict[str, bool]:
        """Whether each job that exists has ended (a job missing from the answer no longer exists)."""
        if not job_ids:
            return {}
        rows = await self._fetch(f"SELECT id, {_ENDED} AS ended FROM jobs WHERE id = ANY(%s)", (list(job_ids),))
        return {r["id"]: bool(r["ended"]) for r in rows}

    async def trim_messages(self, job_id: str, keep: int, keep_bytes: int | None = None) -> int:
        """Keep only the last `keep` messages of a job, and of those only the last that hold `keep_bytes` at most
        (the newest always stays)."""
        count = await self._execute(
            "DELETE FROM job_messages WHERE job_id=%s AND seq < (SELECT seq FROM job_messages WHERE job_id=%s "
            "ORDER BY seq DESC OFFSET %s LIMIT 1)", (job_id, job_id, max(keep - 1, 0)))
        if keep_bytes is not None:
            count += await self._execute(
                "DELETE FROM job_messages WHERE job_id=%(job)s AND seq < coalesce("
                "  (SELECT min(seq) FROM (SELECT seq, sum(octet_length(body::text)) OVER (ORDER BY seq DESC) AS total "
                "   FROM job_messages WHERE job_id=%(job)s) AS newest WHERE total <= %(bytes)s), "
                "  (SELECT max(seq) FROM job_messages WHERE job_id=%(job)s))", {"job": job_id, "bytes": keep_bytes})
        return count

    async def prune_messages(self, ended_before: datetime) -> int:
        """Remove the messages of jobs that ended before `ended_before` (nobody follows them any more)."""
        return await self._execute(
            f"DELETE FROM job_messages m USING jobs WHERE m.job_id = jobs.id AND {_ENDED} AND "
            "jobs.finished_at < %s", (ended_before,))

    async def listen_messages(self, callback: Callable[[str], None]) -> None:
        """Call `callback("<job_id>:<seq>")` when some process wrote messages of a job (on the listening connection
        of `listen_cancels`), until `close`."""
        self._listen_on(MESSAGES_CHANNEL, callback)

    # -- idempotency --------------------------------------------------------------------------------------------

    async def idempotency_reserve(self, scope: str, key: str, fingerprint: str, *, owner_id: str, now: float,
                                  ttl: float) -> tuple[IdempotencyRecord, bool]:
        """Return the live record for (scope, key) and whether this call created it.

        An expired record, or a reservation left without a job by a replica whose heartbeat ran out, is replaced; a
        reservation of a live replica is returned as it is (its job is on the way)."""
        fresh = IdempotencyRecord(scope, key, fingerprint, None, now, now + ttl, owner_id)
        for _ in range(5):
            async with self.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO idempotency (scope, key, fingerprint, job_id, created_at, expires_at, owner_id) "
                    "VALUES (%s, %s, %s, NULL, %s, %s, %s) ON CONFLICT (scope, key) DO NOTHING RETURNING key",
                    (scope, key, fingerprint, now, now + ttl, owner_id))
                if await cur.fetchone() is not None:
                    return fresh, True
                cur = await conn.execute(
                    "SELECT scope, key, fingerprint, job_id, created_at, expires_at, owner_id, "
                    "  EXISTS (SELECT 1 FROM replicas WHERE replicas.owner_id = idempotency.owner_id AND "
                    "          alive_until > %s) AS owner_alive "
                    "FROM idempotency WHERE scope=%s AND key=%s FOR UPDATE", (now, scope, key))
                row = await cur.fetchone()
                if row is None:
                    continue  # removed meanwhile: insert again
                owner_alive = row.pop("owner_alive")  # type: ignore[attr-defined]
                record = IdempotencyRecord(**row)  # type: ignore[arg-type]
                stale = record.expires_at <= now or (
                    record.job_id is None and record.owner_id != owner_id and not owner_alive)
                if not stale:
                    return record, False
                await conn.execute("UPDATE idempotency SET fingerprint=%s, job_id=NULL, created_at=%s, expires_at=%s, "
                                   "owner_id=%s WHERE scope=%s AND key=%s",
                                   (fingerprint, now, now + ttl, owner_id, scope, key))
                return fresh, True
        raise RuntimeError(f"the idempotency key {key!r} changed too often to be reserved")

    async def idempotency_complete(self, scope: str, key: str, job_id: str) -> None:
        await self._execute("UPDATE idempotency SET job_id=%s WHERE scope=%s AND key=%s", (job_id, scope, key))

    async def idempotency_release(self, scope: str, key: str) -> None:
        await self._execute("DELETE FROM idempotency WHERE scope=%s AND key=%s AND job_id IS NULL", (scope, key))

    async def idempotency_prune(self, now: float | None = None) -> int:
        return await self._execute("DELETE FROM idempotency WHERE expires_at<=%s", (now or time.time(),))

    # -- reservations across replicas ---------------------------------------------------------------------------

    async def reserve_name(self, key: tuple[str, ...], *, owner_id: str, now: float, ttl: float) -> str | None:
        """Reserve `key` (kind, remote, project, name: e.g. a name being created) for `owner_id` in the database.
        None when reserved; else who holds it: the id of its unfinished job, or "" while the replica that reserved
        it has not submitted its job yet. A reservation holds while its job is unfinished, or (no job yet) while
        its expiry and its owner's heartbeat last; one that no longer holds is taken over here."""
        k = _reservation_key(key)
        alive = ("EXISTS (SELECT 1 FROM replicas WHERE replicas.owner_id = name_reservations.owner_id AND "
                 "alive_until > %(now)s)")
        unfinished = (f"EXISTS (SELECT 1 FROM jobs WHERE jobs.id = name_reservations.job_id AND {_UNFINISHED})")
        args = {**k, "owner": owner_id, "now": now, "until": now + ttl}
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO name_reservations (remote, project, kind, name, owner_id, job_id, expires_at) "
                "VALUES (%(remote)s, %(project)s, %(kind)s, %(name)s, %(owner)s, NULL, %(until)s) "
                "ON CONFLICT (remote, project, kind, name) DO NOTHING RETURNING name", args)
            if await cur.fetchone() is not None:
                return None
            cur = await conn.execute(
                f"SELECT job_id, CASE WHEN job_id IS NULL THEN expires_at > %(now)s AND {alive} ELSE {unfinished} "
                "END AS holds FROM name_reservations WHERE remote=%(remote)s AND project=%(project)s AND "
                "kind=%(kind)s AND name=%(name)s FOR UPDATE", args)
            row = await cur.fetchone()
            if row is not None and row["holds"]:  # type: ignore[call-overload]
                return row["job_id"] or ""  # type: ignore[call-overload, no-any-return]
            await conn.execute(
                "INSERT INTO name_reservations (remote, project, kind, name, owner_id, job_id, expires_at) "
                "VALUES (%(remote)s, %(project)s, %(kind)s, %(name)s, %(owner)s, NULL, %(until)s) "
                "ON CONFLICT (remote, project, kind, name) DO UPDATE SET owner_id=excluded.owner_id, job_id=NULL, "
                "expires_at=excluded.expires_at", args)
            # Reservations long lapsed (expired, their job ended or never made) go.
            await conn.execute(f"DELETE FROM name_reservations WHERE expires_at < %(old)s AND NOT {unfinished}",
                               {"old": now - ttl})
        return None

    async def bind_name(self, key: tuple[str, ...], job_id: str, *, owner_id: str) -> None:
        """The job reserving `key` exists: the reservation holds until it ends (on whichever replica)."""
        await self._execute("UPDATE name_reservations SET job_id=%(job)s WHERE remote=%(remote)s AND "
                            "project=%(project)s AND kind=%(kind)s AND name=%(name)s AND owner_id=%(owner)s",
                            {**_reservation_key(key), "job": job_id, "owner": owner_id})

    async def release_name(self, key: tuple[str, ...], *, owner_id: str) -> None:
        """Give up a reservation whose job was never submitted."""
        await self._execute("DELETE FROM name_reservations WHERE remote=%(remote)s AND project=%(project)s AND "
                            "kind=%(kind)s AND name=%(name)s AND owner_id=%(owner)s AND job_id IS NULL",
                            {**_reservation_key(key), "owner": owner_id})

    async def reserve_job_slot(self, token_id: str, limit: int, *, slot_id: str, owner_id: str, now: float,
                               ttl: float) -> bool:
        """Take a place under the cap of `limit` unfinished jobs of token `token_id`: False when its unfinished
        jobs and the places taken for jobs on the way (by live replicas, unexpired) reach it. Atomic across
        replicas: one token's places are counted and taken under a transaction lock of that token. The place is
        given back (`release_job_slot`) once the job is stored (then the job counts) or was never made."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (JOB_SLOT_LOCK, token_id))
            await conn.execute(
                "DELETE FROM job_slots WHERE token_id=%(token)s AND (expires_at <= %(now)s OR NOT EXISTS ("
                "SELECT 1 FROM replicas WHERE replicas.owner_id = job_slots.owner_id AND alive_until > %(now)s))",
                {"token": token_id, "now": now})
            cur = await conn.execute(
                f"SELECT (SELECT count(*) FROM jobs WHERE token_id=%(token)s AND {_UNFINISHED}) + "
                "(SELECT count(*) FROM job_slots WHERE token_id=%(token)s) AS n", {"token": token_id})
            row = await cur.fetchone()
            if row is not None and int(row["n"]) >= limit:  # type: ignore[call-overload]
                return False
            await conn.execute("INSERT INTO job_slots (id, token_id, owner_id, expires_at) VALUES (%s, %s, %s, %s)",
                               (slot_id, token_id, owner_id, now + ttl))
        return True

    async def release_job_slot(self, slot_id: str) -> None:
        await self._execute("DELETE FROM job_slots WHERE id=%s", (slot_id,))

    # -- audit --------------------------------------------------------------------------------------------------

    async def audit_append(self, entry: dict[str, Any]) -> None:
        cols = AUDIT_COLUMNS
        await self._execute(f"INSERT INTO audit ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                            tuple(entry.get(c) for c in cols))

    async def audit_list(self, *, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT position, {', '.join(AUDIT_COLUMNS)} FROM audit"
        args: tuple[Any, ...] = ()
        if before is not None:
            sql += " WHERE position < %s"
            args = (before,)
        sql += " ORDER BY position DESC LIMIT %s"
        rows = await self._fetch(sql, (*args, limit))
        return [{**r, "time": rfc3339(r["time"])} for r in rows]

    async def audit_prune(self, before: datetime) -> int:
        return await self._execute("DELETE FROM audit WHERE time < %s", (before,))


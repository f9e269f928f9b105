"""Copy an embedded job database (SQLite) into a shared one (PostgreSQL): `python -m app db copy`.

Jobs (with their outputs and checkpoints), idempotency keys and the audit trail are copied as they are, positions
included (listing cursors stay valid), in one transaction: a copy that fails leaves the target as it was. The source
is opened as the gateway opens it (its schema migrated, its lock taken: a gateway still running on it is refused)
and the target's schema is brought up to date first. A target that holds any job, key or audit record is refused:
copying twice would mix two histories.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.store.jobs import SQLiteJobStore
from app.store.postgres import PostgresJobStore

_JOB_COLUMNS = ("position", "id", "kind", "status", "remote", "project", "resource", "requested_by", "request_id",
                "token_id", "created_at", "started_at", "finished_at", "progress", "operations", "result", "error",
                "params", "checkpoints", "cleanup", "has_output", "seq", "owner_id", "lease_until")
_CASTS = {"created_at": "timestamptz", "started_at": "timestamptz", "finished_at": "timestamptz",
          "progress": "json", "operations": "json", "result": "json", "error": "json", "params": "json",
          "checkpoints": "jsonb", "cleanup": "json", "has_output": "boolean"}
_IDEMPOTENCY_COLUMNS = ("scope", "key", "fingerprint", "job_id", "created_at", "expires_at", "owner_id")
_AUDIT_COLUMNS = ("position", "time", "token", "remote", "project", "method", "path", "resource", "job_id", "status",
                  "outcome", "request_id")


class TargetNotEmpty(Exception):
    """The target database already holds jobs, idempotency keys or audit records."""


@dataclass(frozen=True)
class Copied:
    jobs: int
    outputs: int
    idempotency_keys: int
    audit_records: int


def _insert(table: str, columns: tuple[str, ...], *, identity: bool) -> str:
    values = ", ".join(f"%s::{_CASTS[c]}" if table == "jobs" and c in _CASTS else "%s" for c in columns)
    overriding = " OVERRIDING SYSTEM VALUE" if identity else ""
    return f"INSERT INTO {table} ({', '.join(columns)}){overriding} VALUES ({values})"


async def _rows(source: SQLiteJobStore, sql: str) -> list[tuple[Any, ...]]:
    async with source._r.execute(sql) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def copy_sqlite_to_postgres(source_path: Path, target_url: str) -> Copied:
    """Copy everything of the SQLite job database at `source_path` into the PostgreSQL database `target_url`.

    Raises `StoreLocked` (a gateway uses the source), `TargetNotEmpty`, `StoreUnavailable` (the target cannot be
    reached), FileNotFoundError (no source)."""
    if not await asyncio.to_thread(os.path.isfile, source_path):  # opening would create it
        raise FileNotFoundError(f"no job database at {source_path}")
    source = SQLiteJobStore(source_path)
    target = PostgresJobStore(target_url)
    await source.open()
    try:
        await target.open()
        jobs = await _rows(source, f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs ORDER BY position")
        jobs = [tuple(bool(v) if c == "has_output" else v for c, v in zip(_JOB_COLUMNS, row, strict=True))
                for row in jobs]
        outputs = await _rows(source, "SELECT job_id, output FROM job_outputs WHERE job_id IN (SELECT id FROM jobs)")
        keys = await _rows(source, f"SELECT {', '.join(_IDEMPOTENCY_COLUMNS)} FROM idempotency")
        audit = await _rows(source, f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit ORDER BY position")
        async with target.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM idempotency) + "
                                     "(SELECT count(*) FROM audit) AS n")
            row = await cur.fetchone()
            if row and row["n"]:  # type: ignore[call-overload]
                raise TargetNotEmpty(f"the target database already holds {row['n']} jobs, idempotency keys or "  # type: ignore[call-overload]
                                     "audit records: copy into an empty database")
            async with conn.cursor() as cur:
                await cur.executemany(_insert("jobs", _JOB_COLUMNS, identity=True), jobs)
                await cur.executemany("INSERT INTO job_outputs (job_id, output) VALUES (%s, %s::json)", outputs)
                await cur.executemany(_insert("idempotency", _IDEMPOTENCY_COLUMNS, identity=False), keys)
                await cur.executemany(_insert("audit", _AUDIT_COLUMNS, identity=True), audit)
            for table in ("jobs", "audit"):  # new rows are numbered after the copied ones
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'position'), "
                                   f"coalesce((SELECT max(position) FROM {table}), 0) + 1, false)")
        return Copied(len(jobs), len(outputs), len(keys), len(audit))
    finally:
        await target.close()
        await source.close()

"""Jobs as the job databases keep them: one row of `jobs` (with its output from `job_outputs`) <-> `Job`.

Shared by the SQLite store (`app.store.jobs`) and the PostgreSQL store (`app.store.postgres`): both keep JSON values
as JSON text (the PostgreSQL store reads its `json`/`jsonb` columns as text) and read rows by column name. Times are
RFC 3339 text in SQLite and `timestamptz` in PostgreSQL; `Job` takes either.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from app.jobs.models import Job, JobStatus, rfc3339, split_output
from app.jobs.store import JobFilter, StoredJob

LIST_COLUMNS = ("position", "id", "kind", "status", "remote", "project", "resource", "requested_by", "created_at",
                "started_at", "finished_at", "progress", "operations", "result", "error", "token_id", "has_output",
                "cleanup")
"""What a listing reads: never params, checkpoints or output."""
STORED_COLUMNS = ("position", "id", "kind", "status", "remote", "project", "resource", "requested_by", "request_id",
                  "created_at", "started_at", "finished_at", "progress", "operations", "result", "error", "params",
                  "checkpoints", "seq", "owner_id", "lease_until", "token_id", "has_output", "cleanup")
"""What loading a job reads from `jobs` (its output comes from `job_outputs`, as `output`)."""
AUDIT_COLUMNS = ("time", "token", "remote", "project", "method", "path", "resource", "job_id", "status", "outcome",
                 "request_id")
"""The columns of an audit row, besides its `position`."""


class Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def ts(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def row_to_job(row: Row, *, output: str | None = None) -> Job:
    result = json.loads(row["result"]) if row["result"] is not None else None
    if output is not None:
        result = {**(result if isinstance(result, dict) else {}), **json.loads(output)}
    return Job(
        id=row["id"], kind=row["kind"], status=JobStatus(row["status"]), remote=row["remote"],
        project=row["project"], resource=row["resource"], requested_by=row["requested_by"],
        created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
        progress=json.loads(row["progress"]), lxd_operations=json.loads(row["operations"]), result=result,
        error=json.loads(row["error"]) if row["error"] is not None else None, token_id=row["token_id"],
        cleanup=json.loads(row["cleanup"]) if row["cleanup"] is not None else None,
    )


def row_to_stored(row: Row) -> StoredJob:
    job = row_to_job(row, output=row["output"])
    return StoredJob(job=job, params=json.loads(row["params"]), checkpoints=json.loads(row["checkpoints"]),
                     seq=row["seq"], position=row["position"], owner_id=row["owner_id"],
                     lease_until=row["lease_until"], request_id=row["request_id"])


def result_parts(job: Job) -> tuple[str | None, str | None]:
    """The result as stored in `jobs` (without output) and the output stored in `job_outputs` (None: none)."""
    rest, output = split_output(job.result)
    return (dumps(rest) if rest is not None else None), (dumps(output) if output is not None else None)


def job_values(job: Job) -> dict[str, Any]:
    """The columns a change of `job` writes (JSON as text, times as RFC 3339), by name; `result` without output."""
    result, output = result_parts(job)
    return {
        "status": job.status.value, "started_at": ts(job.started_at), "finished_at": ts(job.finished_at),
        "progress": dumps(job.progress.model_dump()), "operations": dumps([o.model_dump() for o in job.lxd_operations]),
        "result": result, "error": dumps(job.error) if job.error is not None else None, "resource": job.resource,
        "cleanup": dumps(job.cleanup.model_dump(mode="json")) if job.cleanup is not None else None,
        "output": output,
    }


def list_query(flt: JobFilter, *, limit: int, before: int | None, remotes: tuple[str, ...] | None,
               projects: tuple[str, ...] | None, columns: str, mark: str) -> tuple[str, list[Any]] | None:
    """The query of a job listing (newest first) and its arguments, `mark` being the database's parameter marker
    (`?` or `%s`); None when the caller may see no remote or no project (the listing is empty)."""
    where: list[str] = []
    args: list[Any] = []
    for column, allowed in (("remote", remotes), ("project", projects), ("status", flt.status or None)):
        if allowed is not None:
            if not allowed:
                return None
            where.append(f"{column} IN ({','.join([mark] * len(allowed))})")
            args.extend(allowed)
    for column in ("kind", "resource", "remote", "project"):
        value = getattr(flt, column)
        if value is not None:
            where.append(f"{column}={mark}")
            args.append(value)
    if before is not None:
        where.append(f"position<{mark}")
        args.append(before)
    sql = f"SELECT {columns} FROM jobs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY position DESC LIMIT {mark}"
    args.append(limit)
    return sql, args

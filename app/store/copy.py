"""Copy an embedded job database (SQLite) into a shared one (PostgreSQL): `python -m app db copy`.

Jobs (with their outputs and checkpoints), idempotency keys and the audit trail are copied as they are, positions
included (listing cursors stay valid), in one transaction: a copy that fails leaves the target as it was. The source
is opened as the gateway opens it (its schema migrated, its lock taken: a gateway still running on it is refused)
and the target's schema is brought up to date first. A target that holds any job, key or audit record is refused:
copying twice would mix two histories.

The tokens file and the remotes added at run time (`remotes.json` and their certificates, under the data directory)
are copied in the same transaction: tokens as they are (hashed; recorded as imported, so the gateway's bootstrap
import of the same file adds nothing), each remote's private key encrypted with `LXDGW_SECRET_KEY` (a copy with
remotes and no key is refused before anything is written).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.store.jobs import SQLiteJobStore
from app.store.pg_state import SecretKeyMissing, encrypt_key
from app.store.postgres import PostgresJobStore
from app.store.remotes import RemoteStore
from app.store.tokens import TokenRecord, TokenStore

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
    tokens: int = 0
    remotes: int = 0


def _insert(table: str, columns: tuple[str, ...], *, identity: bool) -> str:
    values = ", ".join(f"%s::{_CASTS[c]}" if table == "jobs" and c in _CASTS else "%s" for c in columns)
    overriding = " OVERRIDING SYSTEM VALUE" if identity else ""
    return f"INSERT INTO {table} ({', '.join(columns)}){overriding} VALUES ({values})"


async def _rows(source: SQLiteJobStore, sql: str) -> list[tuple[Any, ...]]:
    async with source._r.execute(sql) as cur:
        return [tuple(r) for r in await cur.fetchall()]


def _remote_rows(data_dir: Path, secret: bytes | None) -> list[tuple[Any, ...]]:
    """(name, spec, client cert, encrypted client key, server cert) of each remote added at run time in
    `data_dir`."""
    store = RemoteStore(data_dir)
    specs = [s for s in store.load() if s.client_cert and s.client_key]
    if specs and secret is None:
        raise SecretKeyMissing(f"{len(specs)} remotes added at run time need LXDGW_SECRET_KEY (or "
                               "LXDGW_SECRET_KEY_FILE) to encrypt their private keys")
    rows = []
    for spec in specs:
        assert secret is not None and spec.client_cert and spec.client_key
        server = store.cert_dir(spec.name) / "server.crt"
        fields = {k: v for k, v in asdict(spec).items() if k not in ("client_cert", "client_key", "server_cert")}
        rows.append((spec.name, json.dumps({**fields, "default": False}), Path(spec.client_cert).read_text(),
                     encrypt_key(secret, spec.name, Path(spec.client_key).read_bytes()),
                     server.read_text() if server.exists() else None))
    return rows


async def copy_sqlite_to_postgres(source_path: Path, target_url: str, *, tokens_file: Path | None = None,
                                  data_dir: Path | None = None, secret: bytes | None = None) -> Copied:
    """Copy everything of the SQLite job database at `source_path` into the PostgreSQL database `target_url`, with
    the tokens of `tokens_file` and the run-time remotes of `data_dir` (both default to the source's directory).

    Raises `StoreLocked` (a gateway uses the source), `TargetNotEmpty`, `StoreUnavailable` (the target cannot be
    reached), FileNotFoundError (no source), `SecretKeyMissing` (remotes to copy and no `secret`)."""
    if not await asyncio.to_thread(os.path.isfile, source_path):  # opening would create it
        raise FileNotFoundError(f"no job database at {source_path}")
    tokens_file = tokens_file or source_path.parent / "tokens.json"
    tokens: list[TokenRecord] = await asyncio.to_thread(TokenStore(tokens_file).list)
    remotes = await asyncio.to_thread(_remote_rows, data_dir or source_path.parent, secret)
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
                                     "(SELECT count(*) FROM audit) + (SELECT count(*) FROM tokens) + "
                                     "(SELECT count(*) FROM remotes) AS n")
            row = await cur.fetchone()
            if row and row["n"]:  # type: ignore[call-overload]
                raise TargetNotEmpty(f"the target database already holds {row['n']} jobs, idempotency keys, "  # type: ignore[call-overload]
                                     "audit records, tokens or remotes: copy into an empty database")
            async with conn.cursor() as cur:
                await cur.executemany(_insert("jobs", _JOB_COLUMNS, identity=True), jobs)
                await cur.executemany("INSERT INTO job_outputs (job_id, output) VALUES (%s, %s::json)", outputs)
                await cur.executemany(_insert("idempotency", _IDEMPOTENCY_COLUMNS, identity=False), keys)
                await cur.executemany(_insert("audit", _AUDIT_COLUMNS, identity=True), audit)
                await cur.executemany("INSERT INTO tokens (name, id, secret_sha256, record, created_at) "
                                      "VALUES (%s, %s, %s, %s::json, %s)",
                                      [(t.name, t.id, t.secret_sha256, t.model_dump_json(), t.created_at)
                                       for t in tokens])
                await cur.executemany("INSERT INTO token_imports (id) VALUES (%s) ON CONFLICT DO NOTHING",
                                      [(t.id,) for t in tokens])
                await cur.executemany("INSERT INTO remotes (name, spec, client_cert, client_key, server_cert) "
                                      "VALUES (%s, %s::json, %s, %s, %s)", remotes)
            await conn.execute("UPDATE state_versions SET version = version + 1 WHERE name IN ('tokens', 'remotes')")
            for table in ("jobs", "audit"):  # new rows are numbered after the copied ones
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'position'), "
                                   f"coalesce((SELECT max(position) FROM {table}), 0) + 1, false)")
        return Copied(len(jobs), len(outputs), len(keys), len(audit), len(tokens), len(remotes))
    finally:
        await target.close()
        await source.close()

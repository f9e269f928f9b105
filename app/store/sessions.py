"""The web console's sessions, kept in the job database so that every replica sharing it knows them.

A session is stored by the sha256 of its id (never the id itself, as tokens are), with the id of the token it stands
for, its CSRF token and its expiry. The SQLite store (`SQLiteSessionStore`) writes through the job store's writer
thread; the PostgreSQL store (`PostgresSessionStore`) through its pool. Both tables come from the job database's
migrations (`app.store.jobs`, `app.store.pg_schema`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.store.jobs import SQLiteJobStore
    from app.store.postgres import PostgresJobStore


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class StoredSession:
    token_id: str
    csrf: str
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at <= (time.time() if now is None else now)


class SessionStore(Protocol):
    async def put(self, session_id: str, token_id: str, csrf: str, expires_at: float) -> None: ...

    async def get(self, session_id: str) -> StoredSession | None:
        """The session, unless unknown or expired."""

    async def delete(self, session_id: str) -> bool: ...

    async def delete_for_token(self, token_id: str) -> int: ...

    async def prune(self, now: float | None = None) -> int: ...


class SQLiteSessionStore:
    """Sessions in the SQLite job database (`ui_sessions`)."""

    def __init__(self, jobs: SQLiteJobStore) -> None:
        self.jobs = jobs

    async def put(self, session_id: str, token_id: str, csrf: str, expires_at: float) -> None:
        await self.jobs._write(
            "INSERT INTO ui_sessions (id_hash, token_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            (session_hash(session_id), token_id, csrf, time.time(), expires_at))

    async def get(self, session_id: str) -> StoredSession | None:
        async with self.jobs._r.execute(
                "SELECT token_id, csrf, expires_at FROM ui_sessions WHERE id_hash=? AND expires_at>?",
                (session_hash(session_id), time.time())) as cur:
            row = await cur.fetchone()
        return None if row is None else StoredSession(row[0], row[1], float(row[2]))

    async def delete(self, session_id: str) -> bool:
        return await self.jobs._write("DELETE FROM ui_sessions WHERE id_hash=?", (session_hash(session_id),)) > 0

    async def delete_for_token(self, token_id: str) -> int:
        return await self.jobs._write("DELETE FROM ui_sessions WHERE token_id=?", (token_id,))

    async def prune(self, now: float | None = None) -> int:
        return await self.jobs._write("DELETE FROM ui_sessions WHERE expires_at<=?", (now or time.time(),))


class PostgresSessionStore:
    """Sessions in the shared PostgreSQL database (`ui_sessions`, migration 5)."""

    def __init__(self, jobs: PostgresJobStore) -> None:
        self.jobs = jobs

    async def put(self, session_id: str, token_id: str, csrf: str, expires_at: float) -> None:
        await self.jobs._execute(
            "INSERT INTO ui_sessions (id_hash, token_id, csrf, created_at, expires_at) VALUES (%s, %s, %s, %s, %s)",
            (session_hash(session_id), token_id, csrf, time.time(), expires_at))

    async def get(self, session_id: str) -> StoredSession | None:
        rows = await self.jobs._fetch(
            "SELECT token_id, csrf, expires_at FROM ui_sessions WHERE id_hash=%s AND expires_at>%s",
            (session_hash(session_id), time.time()))
        if not rows:
            return None
        row = rows[0]
        return StoredSession(row["token_id"], row["csrf"], float(row["expires_at"]))

    async def delete(self, session_id: str) -> bool:
        return await self.jobs._execute("DELETE FROM ui_sessions WHERE id_hash=%s", (session_hash(session_id),)) > 0

    async def delete_for_token(self, token_id: str) -> int:
        return await self.jobs._execute("DELETE FROM ui_sessions WHERE token_id=%s", (token_id,))

    async def prune(self, now: float | None = None) -> int:
        return await self.jobs._execute("DELETE FROM ui_sessions WHERE expires_at<=%s", (now or time.time(),))


def session_store(jobs: object) -> SessionStore:
    """The session store over the job database in use."""
    from app.store.jobs import SQLiteJobStore
    from app.store.postgres import PostgresJobStore

    if isinstance(jobs, SQLiteJobStore):
        return SQLiteSessionStore(jobs)
    if isinstance(jobs, PostgresJobStore):
        return PostgresSessionStore(jobs)
    raise TypeError(f"no session store for {type(jobs).__name__}")

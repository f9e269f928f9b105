"""The console's session store on both databases: kept by the hash of its id, found until it expires, deleted at
logout, by token, and when pruned; on PostgreSQL a session written by one replica is read by another."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from app.store.jobs import SQLiteJobStore
from app.store.postgres import PostgresJobStore
from app.store.sessions import SessionStore, session_hash, session_store


async def _exercise(store: SessionStore, other: SessionStore) -> None:
    now = time.time()
    await store.put("sid-live", "tok-1", "csrf-1", now + 60)
    await store.put("sid-old", "tok-1", "csrf-2", now - 1)
    await store.put("sid-other", "tok-2", "csrf-3", now + 60)
    found = await other.get("sid-live")
    assert found is not None and (found.token_id, found.csrf) == ("tok-1", "csrf-1") and not found.expired()
    assert await other.get("sid-old") is None  # expired: never answered
    assert await other.get("sid-unknown") is None
    assert await store.prune() == 1
    assert await store.delete_for_token("tok-2") == 1
    assert await other.get("sid-other") is None
    assert await store.delete("sid-live") is True
    assert await store.delete("sid-live") is False
    assert await other.get("sid-live") is None


async def test_sqlite_sessions_are_kept_by_hash(tmp_path: Path) -> None:
    jobs = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await jobs.open()
    try:
        store = session_store(jobs)
        await _exercise(store, store)
        await store.put("sid-kept", "tok-3", "csrf-4", time.time() + 60)
    finally:
        await jobs.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        rows = db.execute("SELECT id_hash, token_id FROM ui_sessions").fetchall()
    assert rows == [(session_hash("sid-kept"), "tok-3")]  # the hash, never the id


async def test_postgres_sessions_are_shared_by_replicas(postgres_url: str) -> None:
    first, second = PostgresJobStore(postgres_url), PostgresJobStore(postgres_url)
    await first.open()
    await second.open()
    try:
        await _exercise(session_store(first), session_store(second))
        await session_store(first).put("sid-kept", "tok-3", "csrf-4", time.time() + 60)
        rows = await second._fetch("SELECT id_hash FROM ui_sessions")
        assert [r["id_hash"] for r in rows] == [session_hash("sid-kept")]
    finally:
        await first.close()
        await second.close()

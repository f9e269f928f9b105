"""`store`: a real job database for the store and job engine tests, once on each kind of store.

`sqlite`: the embedded store in a temporary directory; `postgres`: the shared store on a fresh database of the
private PostgreSQL server (tests/support/postgres.py; those tests are marked `postgres`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.jobs.store import JobStore
from app.store.jobs import SQLiteJobStore

STORE_KINDS = ("sqlite", "postgres")


def new_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    """A store of `kind`, not open yet (for PostgreSQL, on the test's own database)."""
    if kind == "postgres":
        from app.store.postgres import PostgresJobStore

        return PostgresJobStore(request.getfixturevalue("postgres_url"))
    return SQLiteJobStore(tmp_path / "jobs.sqlite3")


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    s = new_store(store_kind, request, tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()

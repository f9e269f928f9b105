"""`store`: the job database in a temporary directory (a real SQLite store), for the store and job engine tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.store.jobs import SQLiteJobStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteJobStore]:
    s = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.close()

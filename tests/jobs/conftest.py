"""Fixtures for the jobs unit tests: a bus, a runner, synthetic kinds, on a real store (`store`: SQLite, then
PostgreSQL; tests/support/job_store.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.jobs.bus import JobBus
from app.jobs.kinds import JobKinds
from app.jobs.runner import JobRunner
from app.jobs.store import JobStore


@pytest.fixture
def kinds() -> JobKinds:
    return JobKinds()


@pytest.fixture
async def runner(store: JobStore, kinds: JobKinds) -> AsyncIterator[JobRunner]:
    r = JobRunner(store, JobBus(capacity=64, history=64), kinds=kinds, concurrency_per_remote=2,
                  progress_interval=0.2, lease_seconds=30)
    await r.start()
    try:
        yield r
    finally:
        await r.shutdown(0)

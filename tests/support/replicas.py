"""Gateway processes in miniature for the tests of jobs on a shared PostgreSQL database: each `Replica` is its own
store, bus and runner on the one database, as a gateway process would be. A test module subclasses `Replica` to
register the job kinds its tests use, and makes its `replicas` fixture with `started_replicas`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from app.jobs.bus import JobBus
from app.jobs.kinds import JobKinds, RecoveryOutcome
from app.jobs.models import Job
from app.jobs.runner import JobContext, JobRunner
from app.store.postgres import PostgresJobStore

LEASE = 2.0


class Replica:
    """One gateway process: its store, bus and runner (a short lease), with no job kinds yet."""

    def __init__(self, url: str, name: str, *, lease: float = LEASE, bus: JobBus | None = None) -> None:
        self.name = name
        self.store = PostgresJobStore(url)
        self.kinds = JobKinds()
        self.runner = JobRunner(self.store, JobBus() if bus is None else bus, kinds=self.kinds, lease_seconds=lease,
                                owner_id=name, progress_interval=0.1)

    async def recover(self, job: Job, ctx: JobContext) -> RecoveryOutcome:
        """What a kind registered with `recover=self.recover` does with a job taken over: fail it, naming who."""
        return RecoveryOutcome.failed("gateway-restarted", f"settled by {self.name}")

    async def open(self) -> Replica:
        await self.store.open()
        await self.runner.start()
        return self

    async def close(self) -> None:
        await self.runner.shutdown(0)
        await self.store.close()


R = TypeVar("R", bound=Replica)


@contextlib.asynccontextmanager
async def started_replicas(make: Callable[[str], R]) -> AsyncIterator[Callable[[str], Awaitable[R]]]:
    """`start(name)`: a replica made by `make(name)` and opened; all those started are closed at the end, the last
    first."""
    started: list[R] = []

    async def start(name: str) -> R:
        replica = make(name)
        await replica.open()
        started.append(replica)
        return replica

    try:
        yield start
    finally:
        for replica in reversed(started):
            await replica.close()

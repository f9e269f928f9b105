"""The jobs subsystem of one gateway process: store, bus, runner and idempotency, opened and closed together."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType

from app.jobs.bus import JobBus
from app.jobs.idempotency import Idempotency
from app.jobs.kinds import JobKinds, default_kinds
from app.jobs.runner import JobRunner
from app.jobs.store import JobStore, SQLiteJobStore
from app.settings import Settings

log = logging.getLogger("app.jobs")

DB_NAME = "jobs.sqlite3"


@dataclass
class JobsService:
    store: JobStore
    bus: JobBus
    runner: JobRunner
    idempotency: Idempotency
    sse_heartbeat: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings, *, kinds: JobKinds | None = None,
                      store: JobStore | None = None) -> JobsService:
        store = store or SQLiteJobStore(settings.data_dir / DB_NAME)
        bus = JobBus(capacity=settings.job_subscriber_queue, history=settings.job_subscriber_queue)
        runner = JobRunner(store, bus, kinds=kinds or default_kinds,
                           concurrency_per_remote=settings.job_concurrency_per_remote,
                           progress_interval=settings.job_progress_interval_seconds,
                           lease_seconds=settings.job_lease_seconds,
                           recovery_timeout=settings.job_recovery_timeout_seconds,
                           retention=timedelta(days=settings.job_retention_days))
        idem = Idempotency(store, owner_id=runner.owner_id, ttl=settings.idempotency_ttl_hours * 3600)
        return cls(store=store, bus=bus, runner=runner, idempotency=idem,
                   sse_heartbeat=settings.job_sse_heartbeat_seconds)

    async def start(self) -> list[str]:
        """Open the store, prune, recover what a dead gateway left. Returns the ids of recovered jobs."""
        await self.store.open()
        try:
            return await self.runner.start()
        except BaseException:
            await self.store.close()
            raise

    async def stop(self, grace: float) -> None:
        try:
            await self.runner.shutdown(grace)
        finally:
            await self.store.close()


def load_extensions(names: list[str]) -> list[ModuleType]:
    """Import extension modules (they register job kinds at import; see `Settings.extensions`)."""
    modules = []
    for name in names:
        log.info("loading extension module %s", name)
        modules.append(importlib.import_module(name))
    return modules

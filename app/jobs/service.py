"""The jobs subsystem of one gateway process: store, bus, runner and idempotency, opened and closed together."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType

from app.jobs.bus import JobBus
from app.jobs.idempotency import Idempotency
from app.jobs.runner import JobRunner
from app.jobs.store import JobStore

log = logging.getLogger("app.jobs")

@dataclass
class JobsService:
    store: JobStore
    bus: JobBus
    runner: JobRunner
    idempotency: Idempotency
    sse_heartbeat: float = 15.0

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
    """Import extension modules (`Settings.extensions`); each adds its routes and job kinds in `install(app)`."""
    modules = []
    for name in names:
        log.info("loading extension module %s", name)
        modules.append(importlib.import_module(name))
    return modules

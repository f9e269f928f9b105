"""A test-only gateway extension (loaded with `LXDGW_EXTENSIONS='["tests.jobs.extension_sleep"]'`): synthetic job
kinds and a route that starts them (`?project=` names the job's project, default `default`), so the jobs machinery
is tested end to end without containers.

`test.sleep` params: `steps` (default 5), `interval` seconds (default 0.2), `fail` (fail at the end), `output`
(lines to print per step), `marker` (a file path: created when the job finishes; recovery after a crash settles the
job from it: present means succeeded, absent means rolled back and failed).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from app.jobs import CancelPolicy, Job, JobContext, JobFailure, JobKind, RecoveryOutcome
from app.jobs.starter import JobStarterDep, job_responses


async def recover_sleep(job: Job, ctx: JobContext) -> RecoveryOutcome:
    marker = ctx.params.get("marker")
    if marker and Path(marker).exists():
        return RecoveryOutcome.succeeded({"recovered": True})
    return RecoveryOutcome.failed("rolled-back", "the gateway stopped mid-way; nothing was left behind")


async def rollback_sleep(ctx: JobContext) -> None:
    marker = ctx.params.get("marker")
    if marker:
        Path(marker).unlink(missing_ok=True)


async def sleep_job(ctx: JobContext) -> dict[str, Any]:
    steps = int(ctx.params.get("steps", 5))
    interval = float(ctx.params.get("interval", 0.2))
    for i in range(steps):
        await asyncio.sleep(interval)
        for n in range(int(ctx.params.get("output", 0))):
            await ctx.output("stdout", f"step {i} line {n} " + "x" * int(ctx.params.get("pad", 0)))
        await ctx.progress("sleeping", (i + 1) * 100 // steps, f"step {i + 1} of {steps}")
        await ctx.checkpoint(f"step-{i}")
    if ctx.params.get("fail"):
        raise JobFailure("test-failure", "asked to fail", lxd_error="LXD said no")
    if marker := ctx.params.get("marker"):
        Path(marker).write_text("done")
    return {"steps": steps}


SLEEP = JobKind.of("test.sleep", sleep_job, cancel=CancelPolicy.ROLLBACK_AFTER_STEP, recover=recover_sleep,
                   rollback=rollback_sleep)
JOB_KINDS = (SLEEP,)


def install(app: FastAPI) -> None:
    for kind in JOB_KINDS:
        app.state.job_kinds.register(kind)

    @app.post("/v1/test-jobs", status_code=202, response_model=Job, responses=job_responses(),
              include_in_schema=False)
    async def start_test_job(jobs: JobStarterDep, params: dict[str, Any] = Body(default_factory=dict),
                             project: str = "default") -> JSONResponse:
        return await jobs.start("test.sleep", params=params, resource="/v1/test-jobs/x", remote="local",
                                project=project)

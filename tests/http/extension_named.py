"""A test-only gateway extension (with `tests.jobs.extension_sleep`, whose `test.sleep` kind it starts): a route that
starts a job reserving a name while it runs, as a create does (`POST /v1/test-named/{name}`; 409 while the name
is being made)."""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from app.jobs import Job
from app.jobs.starter import JobStarterDep, job_responses


def install(app: FastAPI) -> None:
    @app.post("/v1/test-named/{name}", status_code=202, response_model=Job, responses=job_responses(),
              include_in_schema=False)
    async def start_named_job(name: str, jobs: JobStarterDep,
                              params: dict[str, Any] = Body(default_factory=dict)) -> JSONResponse:
        return await jobs.start("test.sleep", params=params, resource=f"/v1/test-named/{name}", remote="local",
                                project="default", claim=("container", "local", "default", name),
                                claimed=f"container {name!r}", claimed_slug="container-exists")

"""`/v1/containers/{name}/snapshots`: list, and the jobs `snapshot.create`, `snapshot.restore`,
`snapshot.delete`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.containers.router import READ, WRITE, require_container, start_container_job
from app.http.deps import Backend, BackendDep, ContainerName
from app.http.errors import ProblemError, problem_responses
from app.http.pagination import Page, PageDep, paginate
from app.jobs import Job
from app.jobs.starter import JobStarterDep, job_responses
from app.lxd.errors import NotFound
from app.tokens.guard import enforce_expanded
from app.tokens.policy import Layer

router = APIRouter(prefix="/v1/containers/{name}/snapshots", tags=["snapshots"])

SNAPSHOT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SnapshotName = Annotated[str, Path(pattern=SNAPSHOT_PATTERN, description="the snapshot name", examples=["before"])]


class SnapshotOut(BaseModel):
    name: str = Field(examples=["before-upgrade"])
    stateful: bool = False
    created_at: datetime | None = None
    expires_at: datetime | None = None


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "before-upgrade"}]})

    name: str = Field(pattern=SNAPSHOT_PATTERN, description="the snapshot name")
    stateful: bool = Field(False, description="include the running state (needs CRIU on the server)")


async def _snapshots(b: Backend, name: str) -> list[dict[str, Any]]:
    try:
        snaps = await b.client.instances.snapshots(name)
    except NotFound:
        raise ProblemError(404, f"container {name!r} not found", slug="container-not-found") from None
    return [{"name": s.name.rsplit("/", 1)[-1], "stateful": s.stateful, "created_at": s.created_at,
             "expires_at": s.expires_at} for s in snaps]


async def _require_snapshot(b: Backend, name: str, snap: str) -> None:
    await require_container(b, name)
    if snap not in {s["name"] for s in await _snapshots(b, name)}:
        raise ProblemError(404, f"container {name!r} has no snapshot {snap!r}", slug="snapshot-not-found")


@router.get("", operation_id="snapshots-list", summary="List a container's snapshots",
            response_model=Page[SnapshotOut], dependencies=READ,
            responses=problem_responses(400, 401, 403, 404, 503))
async def list_snapshots(name: ContainerName, b: BackendDep, page: PageDep) -> dict[str, Any]:
    """Snapshots sorted by name."""
    await require_container(b, name)
    return paginate(await _snapshots(b, name), page, key=lambda s: str(s["name"]),
                    filters={"name": name, "remote": b.remote, "project": b.project})


@router.post("", operation_id="snapshots-create", summary="Take a snapshot (job snapshot.create)",
             status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def create_snapshot(name: ContainerName, body: SnapshotCreate, b: BackendDep,
                          jobs: JobStarterDep) -> JSONResponse:
    """409 when the container already has a snapshot of that name."""

    async def snapshot_is_new() -> None:
        if body.name in {s["name"] for s in await _snapshots(b, name)}:
            raise ProblemError(409, f"container {name!r} already has a snapshot {body.name!r}",
                               slug="snapshot-exists")

    return await start_container_job(jobs, b, "snapshot.create", name, {"snapshot": body.name,
                                                                        "stateful": body.stateful},
                                     resource=f"/v1/containers/{name}/snapshots/{body.name}",
                                     then_check=snapshot_is_new)


@router.post("/{snap}/restore", operation_id="snapshots-restore", summary="Restore a snapshot (job)",
             status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def restore_snapshot(name: ContainerName, snap: SnapshotName, request: Request, b: BackendDep,
                           jobs: JobStarterDep) -> JSONResponse:
    """Job `snapshot.restore`: the container goes back to the snapshot. The policy applies to the snapshot's
    config, devices and profiles: the container gets them back."""

    async def precheck() -> None:
        await _require_snapshot(b, name, snap)
        taken = await b.client.instances.snapshot(name, snap)
        await enforce_expanded(request, b, profiles=taken.profiles, where="snapshot.profiles",
                               layers=[Layer(config=taken.config, devices=taken.devices, lxd_written=True)])

    return await jobs.start("snapshot.restore", params={"name": name, "snapshot": snap},
                            resource=f"/v1/containers/{name}", remote=b.remote, project=b.project,
                            precheck=precheck)


@router.delete("/{snap}", operation_id="snapshots-delete", summary="Delete a snapshot (job)", status_code=202,
               response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def delete_snapshot(name: ContainerName, snap: SnapshotName, b: BackendDep,
                          jobs: JobStarterDep) -> JSONResponse:
    """Job `snapshot.delete`."""

    async def precheck() -> None:
        await _require_snapshot(b, name, snap)

    return await jobs.start("snapshot.delete", params={"name": name, "snapshot": snap},
                            resource=f"/v1/containers/{name}/snapshots/{snap}", remote=b.remote,
                            project=b.project, precheck=precheck)

